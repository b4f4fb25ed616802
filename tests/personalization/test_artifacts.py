import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from personalization import export_user_model, fit, load_model, load_reward_model

from .conftest import make_data, small_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["bt", "vpl", "pal"])
def test_it_round_trips_save_and_load(kind, tmp_path):
    data, profiles, *_ = make_data()
    cfg = small_config(epochs=2, pal_form="distance") if kind == "pal" else small_config(epochs=2)
    model = fit(kind, data, profiles, cfg)
    model.encoder_info = {"model_id": "tiny", "model_path": None}
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.safetensors", "config.json"}
    again = load_model(tmp_path / "m")
    assert again.kind == kind and again.user_ids == model.user_ids and again.encoder_info["model_id"] == "tiny"
    p, a, b = data.prompt[:20], data.chosen[:20], data.rejected[:20]
    for uid in ("u0", "u3"):
        assert torch.equal(model.predict_proba(model.user_posterior(uid), p, a, b)[0],
                           again.predict_proba(again.user_posterior(uid), p, a, b)[0])
    prof = {"age": "65+"}
    assert torch.equal(model.prior(prof).mean, again.prior(prof).mean)
    assert torch.equal(model.reward(model.prior(prof), p, a, scaled=True), again.reward(again.prior(prof), p, a, scaled=True))
    ctx = (p[:5], a[:5], b[:5])
    assert torch.equal(model.posterior(ctx, prof).mean, again.posterior(ctx, prof).mean)


def test_it_loads_a_sidecar_written_before_settings_existed(tmp_path):
    data, profiles, *_ = make_data()
    model = fit("vpl", data, profiles, small_config(epochs=1, vpl_likelihood="sample", guard=False))
    model.save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    for key in ("vpl_likelihood", "mixture_max_k", "has_population", "personal_weight", "temperature"):
        meta["config"].pop(key)
    (tmp_path / "config.json").write_text(json.dumps(meta))
    old = load_model(tmp_path)
    # A missing key means the default of its day ("sample" before "probit" was the tuned default).
    assert old.config == model.config
    p, a, b = data.prompt[:10], data.chosen[:10], data.rejected[:10]
    assert torch.equal(old.predict_proba(old.user_posterior("u1"), p, a, b)[0],
                       model.predict_proba(model.user_posterior("u1"), p, a, b)[0])


def test_it_never_pickles(tmp_path):
    data, profiles, *_ = make_data()
    model = fit("vpl", data, profiles, small_config(epochs=1))
    model.save(tmp_path)
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "chorus-personalization/1"
    json.loads((tmp_path / "config.json").read_text())


@pytest.mark.parametrize("kind", ["vpl", "pal"])
def test_it_exports_a_standalone_user_model_loaded_in_a_fresh_process(kind, tmp_path, tiny_encoder_dir):
    from personalization.encoder import EncoderConfig, TextEncoder

    encoder = TextEncoder(EncoderConfig(model_path=str(tiny_encoder_dir), device="cpu"))
    data, profiles, *_ = make_data(dim=encoder.dim)
    cfg = small_config(epochs=2, hidden=[16, 8], pal_form="distance") if kind == "pal" else small_config(epochs=2)
    model = fit(kind, data, profiles, cfg)
    model.encoder_info = {"model_id": encoder.model_id, "model_path": str(tiny_encoder_dir)}
    post = model.update(model.user_posterior("u1"), data.prompt[0], data.chosen[0], data.rejected[0])
    export_user_model(model, post, tmp_path / "export")

    texts = [("hello world", "a good answer", "a bad answer"), ("dog or cat", "i like dogs", "cats are fast")]
    expected = []
    for prompt, a, b in texts:
        emb = encoder.encode([prompt, a, b])
        p_a, _ = model.predict_proba(post, emb[0], emb[1:2], emb[2:3])
        expected.append((float(model.reward(post, emb[0], emb[1:2])[0]), float(p_a[0])))
    # In-process first (quick failure messages), then a fresh interpreter.
    local = load_reward_model(tmp_path / "export")
    for (prompt, a, b), (score, prob) in zip(texts, expected, strict=True):
        assert local.score(prompt, a) == pytest.approx(score, abs=1e-5)
        assert local.prefer(prompt, a, b) == pytest.approx(prob, abs=1e-5)
    code = (
        "import json, sys\n"
        "from personalization import load_reward_model\n"
        f"m = load_reward_model({str(tmp_path / 'export')!r})\n"
        f"texts = {texts!r}\n"
        "out = [[m.score(p, a), m.prefer(p, a, b)] for p, a, b in texts]\n"
        "heavy = [k for k in ('personalization.train', 'personalization.models', 'django') if k in sys.modules]\n"
        "print(json.dumps({'out': out, 'heavy': heavy}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    for (score, prob), (s2, p2) in zip(expected, got["out"], strict=True):
        assert s2 == pytest.approx(score, abs=1e-5) and p2 == pytest.approx(prob, abs=1e-5)
