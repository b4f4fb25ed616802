"""The population guard (personalization/guard.py): back-off to BT chosen on held-out users, calibration."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from personalization.artifacts import export_user_model, load_model
from personalization.guard import Choice, _fit_temperature, apply_choice, label_metrics, logit_spread
from personalization.standalone import load_reward_model
from personalization.train import PreferenceData, fit

from .conftest import DIM, make_data, small_config


def _shared_taste(n_users: int, per_user: int, seed: int, individual: float = 0.0, fresh: bool = False,
                  scale: float = 3.0):
    """Users sharing one linear reward along ``w0``; an individual deviation along ``w1`` of std
    ``individual`` — persistent per user, or (``fresh``) drawn anew for every label: pure noise.
    Returns the data and a function giving true p(a ≻ b) of (user, a, b) for new pairs."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.nn.functional.normalize(torch.randn(DIM, generator=g), dim=0)
    w1 = torch.nn.functional.normalize(torch.randn(DIM, generator=g), dim=0)
    dev = individual * torch.randn(n_users, generator=g)
    user = torch.arange(n_users).repeat_interleave(per_user)
    n = len(user)
    p, a, b = (torch.randn(n, DIM, generator=g) for _ in range(3))
    d = dev[user] if not fresh else individual * torch.randn(n, generator=g)
    logit = scale * ((a - b) @ w0) + scale * d * ((a - b) @ w1)
    a_wins = torch.rand(n, generator=g) < torch.sigmoid(logit)
    c = torch.where(a_wins[:, None], a, b)
    r = torch.where(a_wins[:, None], b, a)
    ids = [f"u{i}" for i in range(n_users)]

    def prob(users: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if fresh:  # E over the fresh deviation: the population's probability (numerically)
            z = individual * torch.randn(256, 1, generator=torch.Generator().manual_seed(1))
            return torch.sigmoid(scale * ((x - y) @ w0) + scale * z * ((x - y) @ w1)).mean(0)
        return torch.sigmoid(scale * ((x - y) @ w0) + scale * dev[users] * ((x - y) @ w1))

    return PreferenceData(user, p, c, r, ids), prob


def _expected(model, data: PreferenceData, prob, n_test: int = 40, seed: int = 9) -> dict[str, float]:
    """Expected accuracy and cross-entropy of the model on fresh pairs of every seen user."""
    g = torch.Generator().manual_seed(seed)
    accs, ces = [], []
    for i, uid in enumerate(data.user_ids):
        p, a, b = (torch.randn(n_test, DIM, generator=g) for _ in range(3))
        q = prob(torch.full((n_test,), i), a, b)
        pred, _ = model.predict_proba(model.user_posterior(uid), p, a, b)
        pred = pred.clamp(1e-6, 1 - 1e-6)
        pick = (pred > 0.5).float()
        accs.append(pick * q + (1 - pick) * (1 - q))
        ces.append(-(q * pred.log() + (1 - q) * (1 - pred).log()))
    return {"acc": float(torch.cat(accs).mean()), "ce": float(torch.cat(ces).mean())}


@pytest.fixture(scope="module")
def noise_population():
    data, prob = _shared_taste(n_users=40, per_user=24, seed=1, individual=1.0, fresh=True)
    # 16 epochs: at 8 this BT is still under-trained (expected accuracy 0.748 against 0.759 at 16), and
    # any model trained for more steps, as the guard's final fit is, beats it for that reason alone.
    cfg = small_config(epochs=16, hidden=[32], latent_dim=3)
    return data, prob, fit("bt", data, None, cfg, seed=0), fit("vpl", data, None, cfg, seed=0)


def test_it_predicts_like_bt_when_the_individual_signal_is_pure_noise(noise_population):
    data, prob, bt, vpl = noise_population
    m_bt, m_vpl = _expected(bt, data, prob), _expected(vpl, data, prob)
    assert abs(m_vpl["acc"] - m_bt["acc"]) <= 0.01, (m_bt, m_vpl, vpl.info["guard"]["chosen"])
    assert m_vpl["ce"] <= m_bt["ce"] + 1e-3, (m_bt, m_vpl, vpl.info["guard"]["chosen"])


def test_it_records_the_guard_choice_in_the_model_and_its_files(noise_population, tmp_path):
    data, _prob, _bt, vpl = noise_population
    guard = vpl.info["guard"]
    assert guard["chosen"] == guard["heldout"]["name"]
    names = [c["name"] for c in guard["candidates"]]
    assert names[0] == "bt" and len(names) > 1  # BT is always a candidate
    for c in guard["candidates"]:
        for part in ("seen", "new"):
            assert {"acc", "ce", "ece", "n"} <= set(c[part])
    assert set(guard["margin_vs_bt"]) == {"seen", "new"}
    assert guard["margin_vs_bt"]["seen"]["ce"] <= 0.0 + 1e-6 or guard["chosen"] == "bt"
    assert vpl.config.temperature == pytest.approx(guard["temperature"], rel=1e-3)
    assert 1.0 <= guard["temperature"] <= guard["temperature_split"] and guard["logit_spread_split"] > 0
    assert (vpl.population is not None) == (guard["personal_weight"] < 1.0)
    vpl.save(str(tmp_path / "m"))
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.info["guard"]["chosen"] == guard["chosen"]
    assert loaded.config.personal_weight == vpl.config.personal_weight
    post = vpl.user_posterior("u0")
    p, a, b = data.prompt[:20], data.chosen[:20], data.rejected[:20]
    assert torch.allclose(loaded.predict_proba(loaded.user_posterior("u0"), p, a, b)[0],
                          vpl.predict_proba(post, p, a, b)[0], atol=1e-5)


def test_it_backs_off_exactly_to_the_population_and_exports_the_blend(tmp_path):
    data, profiles, _direction, _types = make_data(n_users=12, per_user=20, seed=2)
    cfg = small_config(guard=False)
    bt = fit("bt", data, None, cfg, seed=0)
    pal = fit("pal", data, profiles, cfg, seed=0)
    p, a, b = data.prompt[:30], data.chosen[:30], data.rejected[:30]
    before = pal.predict_proba(pal.user_posterior("u1"), p, a, b)[0]
    pal.attach_population(bt, 0.0)
    pal.config = replace(pal.config, temperature=2.0)
    post = pal.user_posterior("u1")
    expected = torch.sigmoid(bt.pair_deltas(p, a, b).db / 2.0)
    assert torch.allclose(pal.predict_proba(post, p, a, b)[0], expected, atol=1e-5)
    pal.attach_population(bt, 0.5)  # half way: between the two, and the standalone export agrees
    mid = pal.predict_proba(post, p, a, b)[0]
    assert not torch.allclose(mid, before, atol=1e-3)
    export_user_model(pal, post, tmp_path / "u1", encoder={"model_id": "x", "model_path": None})
    standalone = load_reward_model(tmp_path / "u1", encoder=object())
    assert torch.allclose(standalone.prefer_embeddings(p, a, b), mid, atol=1e-4)
    rewards = standalone.reward_embeddings(p, a)
    assert torch.allclose(rewards, pal.reward(post, p, a), atol=1e-4)
    pal.save(str(tmp_path / "blended"))  # the population travels inside the checkpoint
    loaded = load_model(str(tmp_path / "blended"))
    assert loaded.population is not None and loaded.config.personal_weight == 0.5
    assert torch.allclose(loaded.predict_proba(loaded.user_posterior("u1"), p, a, b)[0], mid, atol=1e-5)


def test_it_skips_the_guard_with_too_few_users():
    data, profiles, _direction, _types = make_data(n_users=3, per_user=10, seed=0)
    model = fit("vpl", data, profiles, small_config(), seed=0)
    assert "fewer than" in model.info["guard"]["skipped"]
    assert model.population is None and model.config.temperature == 1.0


@pytest.mark.parametrize(("split_over_final", "expected"), [(1.25, 1.6), (4.0, 1.0), (0.5, 2.0)])
def test_it_carries_the_split_temperature_over_at_the_same_confidence_scale(split_over_final, expected):
    """τ = 2 fitted on a split model whose logits spread 1.25× the final model's: the final model gets
    τ = 2 / 1.25; never below 1, and never raised when the final model is the more confident one."""
    data, profiles, _direction, _types = make_data(n_users=8, per_user=16, seed=4)
    cfg = small_config(guard=False)
    bt, vpl = fit("bt", data, None, cfg, seed=0), fit("vpl", data, profiles, cfg, seed=0)
    final = logit_spread(vpl, bt, data, 0.5)
    assert final > 0
    tau = apply_choice(vpl, bt, Choice(0.5, 1.0, False, temperature=2.0), data, None,
                       torch.zeros(len(data.user_ids), dtype=torch.bool), split_spread=split_over_final * final)
    assert tau == pytest.approx(expected, rel=1e-4)
    assert vpl.config.temperature == tau and vpl.config.personal_weight == 0.5


def test_it_fits_the_temperature_of_known_probabilities():
    g = torch.Generator().manual_seed(0)
    m = 3.0 * torch.randn(20000, generator=g)
    y = torch.rand(20000, generator=g) < torch.sigmoid(m / 2.0)  # the truth is twice as soft as m
    logits = torch.where(y, m, -m)  # labels oriented chosen-first, as the guard sees them
    tau = _fit_temperature((logits, torch.zeros_like(logits)), [])
    assert tau == pytest.approx(2.0, rel=0.08)
    calibrated = label_metrics(torch.sigmoid(logits / tau))
    assert calibrated["ece"] < 0.02
    assert label_metrics(torch.sigmoid(logits))["ece"] > 0.05  # the raw logits were over-confident


def test_it_never_sharpens_with_a_temperature_below_one():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(20000, generator=g)
    y = torch.rand(20000, generator=g) < torch.sigmoid(2.0 * m)  # the truth is sharper than m
    logits = torch.where(y, m, -m)
    assert _fit_temperature((logits, torch.zeros_like(logits)), []) == 1.0


def test_it_is_calibrated_on_a_generator_with_known_probabilities():
    """A population with persistent individual deviations and soft labels: the guarded model's predicted
    probabilities match the true ones (ECE against the truth, binned by prediction)."""
    data, prob = _shared_taste(n_users=80, per_user=30, seed=4, individual=0.6, scale=1.5)
    model = fit("vpl", data, None, small_config(epochs=10, hidden=[32], latent_dim=3), seed=0)
    g = torch.Generator().manual_seed(3)
    preds, truth = [], []
    for i, uid in enumerate(data.user_ids):
        p, a, b = (torch.randn(50, DIM, generator=g) for _ in range(3))
        preds.append(model.predict_proba(model.user_posterior(uid), p, a, b)[0])
        truth.append(prob(torch.full((50,), i), a, b))
    pred, q = torch.cat(preds), torch.cat(truth)
    idx = (pred * 10).long().clamp(0, 9)
    ece = sum(float((idx == k).float().mean()) * abs(float(pred[idx == k].mean() - q[idx == k].mean()))
              for k in range(10) if (idx == k).any())
    assert ece < 0.05, (ece, model.info["guard"]["chosen"], model.config.temperature)
    assert math.isfinite(model.info["guard"]["heldout"]["seen"]["ece"])
