import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from personalization import Posterior, fit, load_model
from personalization.artifacts import MODEL_FORMAT
from personalization.models.mixture import collapse, fit_tied_gmm, laplace_log_evidence, log_normal
from personalization.models.posterior import laplace

from .conftest import DIM, make_data, small_config


def _clusters(centres: list[list[float]], per: int, spread: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(centres)
    means = torch.cat([c[i] + spread * torch.randn(per, c.shape[1], generator=g) for i in range(len(c))])
    covs = (0.01 * torch.eye(c.shape[1])).expand(means.shape[0], -1, -1)
    return means, covs


def test_it_finds_the_number_of_types_by_bic():
    means, covs = _clusters([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]], per=40, spread=0.4)
    fit3 = fit_tied_gmm(means, covs, max_k=6)
    assert fit3.k == 3
    found = sorted(fit3.means.argmax(1).tolist())
    assert found == [0, 1, 2]
    torch.testing.assert_close(fit3.log_weights.exp(), torch.full((3,), 1 / 3), atol=0.02, rtol=0)
    # One taste for everybody: BIC keeps a single Gaussian.
    single, single_covs = _clusters([[1.0, -1.0, 0, 0]], per=120, spread=0.5)
    assert fit_tied_gmm(single, single_covs, max_k=6).k == 1


def test_it_ignores_components_too_small_to_trust():
    means, covs = _clusters([[4.0, 0], [-4.0, 0]], per=30, spread=0.3)
    outlier = torch.tensor([[0.0, 9.0], [0.2, 9.1]])
    fit_ = fit_tied_gmm(torch.cat([means, outlier]), torch.cat([covs, covs[:2]]), max_k=4, min_share=0.05)
    assert fit_.k == 2


def test_it_collapses_a_mixture_by_moment_matching():
    log_w = torch.log(torch.tensor([0.25, 0.75]))
    means = torch.tensor([[0.0], [4.0]])
    covs = torch.tensor([[[1.0]], [[2.0]]])
    mean, cov = collapse(log_w, means, covs)
    assert float(mean) == pytest.approx(3.0)
    # E[var] + var[E] = (0.25·1 + 0.75·2) + (0.25·9 + 0.75·1)
    assert float(cov) == pytest.approx(1.75 + 3.0)


def test_it_approximates_the_evidence_of_labels_like_quadrature():
    # One latent dimension, five labels: Laplace's log evidence vs dense numerical integration.
    db = torch.tensor([0.2, -0.1, 0.4, 0.0, 0.3])
    dg = torch.tensor([[1.0], [0.8], [-0.5], [1.2], [0.6]])
    mu, var = torch.tensor([0.5]), torch.tensor([[2.0]])
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    loglik = torch.nn.functional.logsigmoid(db.double()[None] + grid[:, None] * dg.double().T).sum(1)
    prior = -0.5 * (grid - 0.5) ** 2 / 2.0 - 0.5 * math.log(2 * math.pi * 2.0)
    exact = torch.logsumexp(loglik + prior, 0) + math.log(float(grid[1] - grid[0]))
    mode, cov = laplace(db[None], dg[None], torch.ones(1, 5), mu[None], var[None], "identity", iters=50)
    ll = torch.nn.functional.logsigmoid(db + dg @ mode[0]).sum()
    approx = laplace_log_evidence(ll, mode[0], cov[0], mu, var)
    assert abs(float(approx) - float(exact)) < 0.05
    assert float(log_normal(torch.zeros(1), torch.zeros(1), torch.eye(1))) == pytest.approx(-0.5 * math.log(2 * math.pi))


@pytest.fixture(scope="module")
def typed_model():
    """VPL on two opposed types with profiles that say which: the users cluster, so a mixture is fitted.
    The population guard is off: these tests are about the mixture prior itself (the guard may prefer the
    profile network's Gaussian prior here, which says the type just as well; tests/personalization/test_guard.py)."""
    data, profiles, direction, types = make_data(n_users=40, per_user=30, seed=3)
    model = fit("vpl", data, profiles, small_config(epochs=40, latent_dim=2, guard=False), seed=0)
    return model, data, profiles, direction, types


def test_it_fits_a_mixture_of_types_when_users_cluster(typed_model):
    model, data, profiles, direction, types = typed_model
    assert model.has_mixture and model.mix_log_weights.numel() == 2
    prior = model.prior(None)
    assert prior.components is not None and prior.components[1].shape == (2, 2)
    # The profile moves the weight onto the component of the user's type, and the two types disagree.
    g = torch.Generator().manual_seed(9)
    p, a, b = (torch.randn(300, DIM, generator=g) for _ in range(3))
    truth = ((a - b) @ direction) > 0
    for age, t in (("18-24", 0), ("65+", 1)):
        post = model.prior({"age": age, "gender": "female"})
        assert post.components is not None
        types_w = post.components[0].exp()
        assert float(types_w.max() / types_w.sum()) > 0.8
        prob, _ = model.predict_proba(post, p, a, b)
        want = ~truth if t == 0 else truth
        assert float(((prob > 0.5) == want).float().mean()) > 0.75


def test_it_reads_a_new_users_labels_against_the_right_type(typed_model):
    model, data, profiles, direction, types = typed_model
    g = torch.Generator().manual_seed(11)
    p, a, b = (torch.randn(12, DIM, generator=g) for _ in range(3))
    a_wins = ((a - b) @ direction) > 0  # a type-1 user
    c, r = torch.where(a_wins[:, None], a, b), torch.where(a_wins[:, None], b, a)
    post = model.posterior((p[:4], c[:4], r[:4]), None)
    assert post.components is not None and post.n_labels == 4
    w = post.components[0].exp()
    type1 = int(torch.stack([model.user_posterior(f"u{i}").mean for i in range(40) if int(types[i]) == 1])
                .mean(0).sub(model.mix_means).norm(dim=1).argmin())
    assert float(w[type1] / w.sum()) > 0.9
    # Label by label (rank-one steps per component, re-weighted) agrees with the batch posterior.
    step = model.prior(None)
    for i in range(4):
        step = model.update(step, p[i], c[i], r[i])
    assert step.components is not None and step.n_labels == 4
    step_w = step.components[0].exp()
    assert float(step_w[type1] / step_w.sum()) > 0.9
    tp, ta, tb = (torch.randn(200, DIM, generator=g) for _ in range(3))
    agree = (model.predict_proba(step, tp, ta, tb)[0] > 0.5) == (model.predict_proba(post, tp, ta, tb)[0] > 0.5)
    assert float(agree.float().mean()) > 0.95


def test_it_round_trips_a_mixture_posterior_and_model(typed_model, tmp_path):
    model, data, profiles, *_ = typed_model
    post = model.posterior((data.prompt[:3], data.chosen[:3], data.rejected[:3]), profiles["u0"])
    again = Posterior.from_dict(post.to_dict())
    assert again.components is not None
    for x, y in zip(again.components, post.components, strict=True):
        torch.testing.assert_close(x, y)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.has_mixture
    p, a, b = data.prompt[:20], data.chosen[:20], data.rejected[:20]
    for profile in (None, profiles["u1"]):
        torch.testing.assert_close(loaded.predict_proba(loaded.prior(profile), p, a, b)[0],
                                   model.predict_proba(model.prior(profile), p, a, b)[0])


def test_it_loads_a_model_saved_before_the_mixture_existed(typed_model, tmp_path):
    model, data, *_ = typed_model
    model.save(tmp_path / "old")
    weights = tmp_path / "old" / "model.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("mix_")}
    save_file(state, str(weights), metadata={"format": MODEL_FORMAT, "kind": "vpl"})
    old = load_model(tmp_path / "old")
    assert not old.has_mixture and old.prior(None).components is None


def test_it_keeps_a_single_gaussian_when_asked_or_when_tastes_do_not_cluster():
    data, profiles, *_ = make_data(n_users=40, per_user=30, seed=3)
    off = fit("pal", data, profiles, small_config(epochs=5, mixture_max_k=0), seed=0)
    assert not off.has_mixture and off.prior(None).components is None
    # Everybody with the same taste: BIC picks one component.
    same = data.subset(torch.nonzero(data.user % 2 == 0).squeeze(1))
    one = fit("vpl", same, profiles, small_config(epochs=20, latent_dim=2), seed=0)
    assert not one.has_mixture


def test_it_keeps_the_mixture_only_where_it_predicts_held_out_labels_better(typed_model, monkeypatch):
    model, *_ = typed_model
    check = model.info["prior_check"]
    assert check["contexts"] == [0, 2, 5, 10] and check["mixture"] > check["gaussian"]
    # Type weights that ignore the profile (a heavy penalty on the profile → weight regression) make the
    # mixture a worse start than the profile's Gaussian prior on these profile-determined users: refused.
    from personalization.models import empirical_bayes

    original = empirical_bayes.fit_mixture
    monkeypatch.setattr(empirical_bayes, "fit_mixture",
                        lambda model, *a, **kw: original(model, *a, **{**kw, "l2": 100.0}))
    data, profiles, *_ = make_data(n_users=40, per_user=30, seed=3)
    refused = fit("vpl", data, profiles, small_config(epochs=40, latent_dim=2), seed=0)
    assert refused.info["prior_check"]["mixture"] < refused.info["prior_check"]["gaussian"]
    assert not refused.has_mixture and refused.prior(None).components is None
