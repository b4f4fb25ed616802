import copy
import math

import pytest
import torch

from personalization import fit
from personalization.models import empirical_bayes as eb

from .conftest import make_data, small_config


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as fit() runs these functions: the out-of-fold fits are thousands of tiny steps,
    and on a busy machine two threads make each one pay a thread-pool barrier (25x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fitted():
    """Raw VPL and PAL models (no guard, no mixture: the single Gaussian prior these tests check)."""
    data, profiles, *_ = make_data()
    cfg = small_config(epochs=5, guard=False, mixture_max_k=0)
    return {k: fit(k, data, profiles, cfg, seed=0) for k in ("vpl", "pal")}, data, profiles


def test_it_pads_each_users_labels_into_a_row_in_data_order(fitted):
    models, data, _profiles = fitted
    model = models["pal"]
    # Interleave the users so padding has to regroup them.
    order = torch.argsort(torch.arange(len(data)) % 30, stable=True)
    user, p, c, r = data.user[order], data.prompt[order], data.chosen[order], data.rejected[order]
    pad_db, pad_dg, mask = eb.padded_labels(model, user, p, c, r)
    counts = torch.bincount(user, minlength=len(data.user_ids))
    assert pad_db.shape == mask.shape == (len(data.user_ids), int(counts.max()))
    assert pad_dg.shape == (*pad_db.shape, model.latent_dim)
    torch.testing.assert_close(mask.sum(1), counts.float())
    rows = torch.nonzero(user == 3).squeeze(1)
    db, dg = model.deltas(p[rows], c[rows], r[rows])
    torch.testing.assert_close(pad_db[3, : len(rows)], db)
    torch.testing.assert_close(pad_dg[3, : len(rows)], dg)


@pytest.mark.parametrize("kind", ["vpl", "pal"])
def test_it_refits_seen_users_like_a_posterior_from_their_labels(kind, fitted):
    models, data, profiles = fitted
    model = copy.deepcopy(models[kind])
    feats = model.profile_features([profiles[u] for u in data.user_ids])
    has = torch.ones(len(data.user_ids), dtype=torch.bool)
    model.prior_var_profile = model.prior_var_profile * 2.0  # a prior the guard changed
    eb.refit_seen_posteriors(model, data.user, data.prompt, data.chosen, data.rejected, feats, has)
    for uid in ("u0", "u5"):
        rows = data.user == data.user_ids.index(uid)
        direct = model.posterior((data.prompt[rows], data.chosen[rows], data.rejected[rows]), profiles[uid])
        seen = model.user_posterior(uid)
        torch.testing.assert_close(seen.mean, direct.mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(seen.cov, direct.cov, atol=1e-4, rtol=1e-4)


def test_it_counts_labels_and_skips_the_rest_for_a_model_without_a_latent():
    data, *_ = make_data(n_users=4, per_user=5)
    bt = fit("bt", data, None, small_config(epochs=1), seed=0)
    eb.fit_user_posteriors(bt, data.user[:7], data.prompt[:7], data.chosen[:7], data.rejected[:7], None)
    assert bt.user_n.tolist() == [5, 2, 0, 0] and bt.user_mean.shape == (4, 0)


def test_it_scores_labels_by_the_probit_predictive():
    db = torch.tensor([[1.0, -2.0, 0.5]])
    dg = torch.tensor([[[1.0], [0.5], [2.0]]])
    mean, mask = torch.tensor([[0.5]]), torch.tensor([[1.0, 1.0, 0.0]])
    point = eb.predictive_score("identity", db, dg, mean, torch.zeros(1, 1, 1), mask)
    assert point == pytest.approx(math.log(torch.sigmoid(torch.tensor(1.5))) + math.log(torch.sigmoid(torch.tensor(-1.75))))
    # Uncertainty pulls every prediction towards 1/2: the confident right label loses, the wrong one gains.
    wide = eb.predictive_score("identity", db, dg, mean, torch.full((1, 1, 1), 4.0), torch.tensor([[1.0, 0, 0]]))
    assert wide < math.log(torch.sigmoid(torch.tensor(1.5)))


@pytest.mark.parametrize("kind", ["vpl", "pal"])
def test_it_takes_the_profile_prior_variance_out_of_fold(kind, fitted):
    models, *_ = fitted
    model = models[kind]
    gen = torch.Generator().manual_seed(0)
    n, feats_dim, latent = 200, 12, model.latent_dim
    x = torch.randn(n, feats_dim, generator=gen)
    noise = torch.randn(n, latent, generator=gen)
    ones, zeros = torch.ones(n, dtype=torch.bool), torch.zeros(n, latent)
    # Profiles that say nothing: a network fitted to 160 users cannot predict the other 40, so the
    # prior variance is the latents' whole spread (an in-sample fit would claim less).
    blind = eb.cv_profile_var(model, x, noise, zeros, ones, ones)
    assert (blind > 0.8 * noise.var(0)).all()
    # Profiles that tell the latent: only the part they leave out remains.
    told = eb.cv_profile_var(model, x, x[:, :latent] + 0.1 * noise, zeros, ones, ones)
    assert (told < 0.2).all()
    # Posterior variance adds on top, and too few users to split gives no estimate.
    with_post = eb.cv_profile_var(model, x, noise, torch.full((n, latent), 0.5), ones, ones)
    torch.testing.assert_close(with_post, blind + 0.5)
    assert eb.cv_profile_var(model, x[:10], noise[:10], zeros[:10], ones[:10], ones[:10]) is None


def test_it_widens_the_profile_prior_to_the_out_of_fold_spread(fitted, monkeypatch):
    models, data, profiles = fitted
    model = copy.deepcopy(models["pal"])
    feats = model.profile_features([profiles[u] for u in data.user_ids])
    wide = torch.full((model.latent_dim,), 7.0)
    monkeypatch.setattr(eb, "cv_profile_var", lambda *args, **kw: wide)
    eb.fit_user_posteriors(model, data.user, data.prompt, data.chosen, data.rejected, feats)
    torch.testing.assert_close(model.prior_var_profile, wide)
    # A narrower out-of-fold estimate never tightens the in-sample one.
    monkeypatch.setattr(eb, "cv_profile_var", lambda *args, **kw: torch.full((model.latent_dim,), 1e-3))
    eb.fit_user_posteriors(model, data.user, data.prompt, data.chosen, data.rejected, feats)
    assert (model.prior_var_profile > 1e-3).all()
