"""Fitting the seen users and the prior new users start from, after a model is trained.

``fit_user_posteriors`` gives every training user a Laplace posterior over θ and sets the prior's
variances by empirical Bayes (the profile prior's out-of-fold, ``cv_profile_var``); then, where the
users cluster, a mixture-of-types prior (``fit_mixture``), kept only if it predicts the seen users'
held-out labels better than the single Gaussian (``mixture_predicts_better``). ``refit_seen_posteriors``
redoes the posteriors under a prior the population guard changed. Functions of the model: they read its
network and write its prior and posterior buffers. Inference (a user's posterior from context, updates,
predictions) stays on the model (base.RewardModel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .mixture import collapse, fit_tied_gmm
from .posterior import link_fn, link_jacobian

if TYPE_CHECKING:
    from .base import RewardModel


def padded_labels(model: RewardModel, user: torch.Tensor, prompt: torch.Tensor, chosen: torch.Tensor,
                  rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every training user's label deltas in rows: Δb (U, P), Δg (U, P, L) and a mask (U, P); a row
    keeps the user's labels in data order."""
    n_users, latent = len(model.user_ids), model.latent_dim
    db, dg = model._deltas_chunked(prompt, chosen, rejected)
    order = torch.argsort(user.cpu(), stable=True)
    counts = torch.bincount(user.cpu(), minlength=n_users)
    width = max(int(counts.max()) if counts.numel() else 1, 1)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(order)) - starts[user.cpu()[order]]
    pad_db, pad_dg, mask = torch.zeros(n_users, width), torch.zeros(n_users, width, latent), torch.zeros(n_users, width)
    uo = user.cpu()[order]
    pad_db[uo, slot] = db[order]
    pad_dg[uo, slot] = dg[order]
    mask[uo, slot] = 1.0
    return pad_db, pad_dg, mask


@torch.no_grad()
def refit_seen_posteriors(model: RewardModel, user: torch.Tensor, prompt: torch.Tensor, chosen: torch.Tensor,
                          rejected: torch.Tensor, profile_feats: torch.Tensor | None,
                          has_profile: torch.Tensor) -> None:
    """Seen users' posteriors again under the model's CURRENT prior (no empirical-Bayes step): after the
    guard changed the prior's scale, the mixture choice or the population blend."""
    if model.latent_dim == 0:
        return
    was_training = model.training
    model.eval()
    n_users, latent = len(model.user_ids), model.latent_dim
    pad_db, pad_dg, mask = padded_labels(model, user, prompt, chosen, rejected)
    feats = profile_feats if model.prior_net is not None else None
    has = has_profile.cpu() & torch.tensor(model.prior_net is not None)
    active = mask.sum(1) > 0
    if model.has_mixture:
        log_w = mixture_user_log_weights(model, n_users, feats, has)
        mean, cov = mixture_batch_posterior(model, pad_db, pad_dg, mask, log_w)
    else:
        mu = model.prior_mean(feats).float().cpu().expand(n_users, latent)
        no_prof = model.prior_mean(model.profile_features([None]) if model.prior_net is not None else None)
        mu0 = torch.where(has.unsqueeze(1), mu, no_prof.float().cpu().expand(n_users, latent))
        var = torch.where(has.unsqueeze(1), model.prior_var_profile.cpu(), model.prior_var_population.cpu())
        mean, cov = model._laplace_chunked(pad_db, pad_dg, mask, mu0, torch.diag_embed(var), mu0.clone())
    keep = active.unsqueeze(1)
    model.user_mean = torch.where(keep, mean, model.user_mean.cpu()).to(model.user_mean.device)
    model.user_cov = torch.where(keep.unsqueeze(2), cov, model.user_cov.cpu()).to(model.user_cov.device)
    model.train(was_training)


@torch.no_grad()
def fit_user_posteriors(
    model: RewardModel,
    user: torch.Tensor,
    prompt: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    profile_feats: torch.Tensor | None,
    has_profile: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
    em_rounds: int = 2,
    mixture: bool = True,
) -> None:
    """Laplace posteriors of all training users, with empirical-Bayes prior variances; then (with
    ``mixture``) the mixture-of-types prior that new users start from."""
    n_users, latent = len(model.user_ids), model.latent_dim
    counts = torch.bincount(user.cpu(), minlength=n_users)
    model.user_n = counts.to(model.user_n.device)
    if latent == 0:
        return
    was_training = model.training
    model.eval()
    pad_db, pad_dg, mask = padded_labels(model, user, prompt, chosen, rejected)
    feats = profile_feats if model.prior_net is not None else None
    mu0 = model.prior_mean(feats).float().cpu().expand(n_users, latent).clone()
    no_prof = model.prior_mean(model.profile_features([None]) if model.prior_net is not None else None)
    mu_pop = no_prof.float().cpu().expand(n_users, latent)
    if has_profile is None:
        has_profile = torch.ones(n_users, dtype=torch.bool)
    has_profile = has_profile.cpu() & torch.tensor(model.prior_net is not None)
    mean = init.float().cpu() if init is not None else mu0.clone()
    cov = torch.zeros(n_users, latent, latent)
    active = counts > 0
    for _ in range(max(em_rounds, 1)):
        var = torch.where(has_profile.unsqueeze(1), model.prior_var_profile.cpu(), model.prior_var_population.cpu())
        mean, cov = model._laplace_chunked(pad_db, pad_dg, mask, mu0, torch.diag_embed(var), mean)
        # Empirical Bayes (one EM step): prior variance = spread of user posteriors around the prior mean.
        post_var = cov.diagonal(dim1=-2, dim2=-1)
        if int(active.sum()) >= 2:
            pv = ((mean - mu0) ** 2 + post_var)[active & has_profile]
            if pv.shape[0] >= 2:
                model.prior_var_profile = pv.mean(0).clamp_min(1e-3).to(model.prior_var_profile.device)
            pv = ((mean - mu_pop) ** 2 + post_var)[active]
            model.prior_var_population = pv.mean(0).clamp_min(1e-3).to(model.prior_var_population.device)
    if feats is not None:
        cv_var = cv_profile_var(model, feats.float().cpu(), mean, cov.diagonal(dim1=-2, dim2=-1), active,
                                has_profile)
        if cv_var is not None:
            # The prior net was trained on these very users, so their spread around its predictions
            # understates a NEW user's: the profile prior's variance comes from out-of-fold
            # predictions instead, and the seen users' posteriors are refitted under it.
            model.prior_var_profile = torch.maximum(model.prior_var_profile.cpu(), cv_var).to(
                model.prior_var_profile.device)
            var = torch.where(has_profile.unsqueeze(1), model.prior_var_profile.cpu(),
                              model.prior_var_population.cpu())
            mean, cov = model._laplace_chunked(pad_db, pad_dg, mask, mu0, torch.diag_embed(var), mean)
    model.user_mean = mean.to(model.user_mean.device)
    model.user_cov = cov.to(model.user_cov.device)
    if mixture and model.config.mixture_max_k >= 2:
        fit_mixture(model, active, profile_feats, has_profile)
        if model.has_mixture:
            var = torch.where(has_profile.unsqueeze(1), model.prior_var_profile.cpu(),
                              model.prior_var_population.cpu())
            settings = [(mu0, var, mixture_user_log_weights(model, n_users, feats, has_profile))]
            if bool(has_profile.any()):  # the same users with their profiles hidden
                settings.append((mu_pop.clone(), model.prior_var_population.cpu().expand(n_users, latent),
                                 mixture_user_log_weights(model, n_users, feats, torch.zeros_like(has_profile))))
            if mixture_predicts_better(model, pad_db, pad_dg, mask, settings):
                refit_under_mixture(model, pad_db, pad_dg, mask, active, profile_feats, has_profile)
            else:
                model.mix_log_weights = torch.zeros(0, device=model.user_mean.device)
    model.train(was_training)


def fit_mixture(model: RewardModel, active: torch.Tensor, profile_feats: torch.Tensor | None,
                has_profile: torch.Tensor, steps: int = 500, l2: float = 1e-3) -> None:
    """Empirical Bayes for a mixture-of-types prior over θ (mixture.py) from the seen users' posteriors,
    and a softmax regression from profiles to its weights. BIC keeps one Gaussian (and the model's
    single-Gaussian prior) when the users do not cluster."""
    model.mix_log_weights = torch.zeros(0, device=model.user_mean.device)
    rows = torch.nonzero(active).squeeze(1)
    if rows.numel() < 6:
        return
    fit = fit_tied_gmm(model.user_mean[rows].float().cpu(), model.user_cov[rows].float().cpu(),
                       max_k=model.config.mixture_max_k)
    if fit.k < 2:
        return
    dev = model.user_mean.device
    model.mix_means = fit.means.to(dev)
    model.mix_cov = fit.cov.to(dev)
    weights = torch.zeros(model.config.profile_dim, fit.k)
    if model.profile_encoder is not None and profile_feats is not None and model.config.profile_dim > 0:
        # Soft targets: each user's responsibilities, once with their profile (when they have one)
        # and once with the missing-profile row, so an absent profile gets population-like weights.
        feats = profile_feats.float().cpu()[rows]
        missing = model.profile_features([None]).float().cpu().expand(rows.numel(), -1)
        keep = has_profile.cpu()[rows]
        x = torch.cat([feats[keep], missing])
        target = torch.cat([fit.responsibilities[keep], fit.responsibilities])
        w = torch.zeros(x.shape[1], fit.k, requires_grad=True)
        b = fit.log_weights.clone().requires_grad_(True)
        with torch.enable_grad():
            opt = torch.optim.Adam([w, b], lr=0.05)
            for _ in range(steps):
                loss = -(target * torch.log_softmax(x @ w + b, dim=-1)).sum(-1).mean() + l2 * (w * w).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        weights, base = w.detach(), b.detach()
    else:
        base = fit.log_weights
    model.mix_log_weights = base.to(dev)
    model.mix_profile_w = weights.to(dev)


def mixture_user_log_weights(model: RewardModel, n_users: int, profile_feats: torch.Tensor | None,
                             has_profile: torch.Tensor) -> torch.Tensor:
    """log π_k for every training user (U, K), from their profile or the missing-profile row."""
    k = model.mix_log_weights.shape[0]
    if profile_feats is not None and model.mix_profile_w.numel() > 0:
        missing = model.profile_features([None]).float().cpu().expand(n_users, -1)
        feats = torch.where(has_profile.cpu().unsqueeze(1), profile_feats.float().cpu(), missing)
        return torch.log_softmax(model.mix_log_weights.float().cpu() + feats @ model.mix_profile_w.float().cpu(), -1)
    return torch.log_softmax(model.mix_log_weights.float().cpu(), -1).expand(n_users, k)


def mixture_batch_posterior(model: RewardModel, pad_db: torch.Tensor, pad_dg: torch.Tensor, mask: torch.Tensor,
                            log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapsed posteriors of U users under the fitted mixture prior from padded labels (mask = which
    labels count): (U, L), (U, L, L)."""
    n_users, k, latent = pad_db.shape[0], model.mix_log_weights.shape[0], model.latent_dim
    means = model.mix_means.float().cpu().expand(n_users, k, latent)
    covs = model.mix_cov.float().cpu().expand(n_users, k, latent, latent)
    return collapse(*model._component_posteriors(pad_db, pad_dg, mask, log_w, means, covs))


def predictive_score(link: str, pad_db: torch.Tensor, pad_dg: torch.Tensor, mean: torch.Tensor,
                     cov: torch.Tensor, mask: torch.Tensor) -> float:
    """Σ log p(label) over the masked labels under each user's Gaussian (probit predictive)."""
    logits = pad_db + torch.einsum("upl,ul->up", pad_dg, link_fn(link, mean))
    psi = torch.einsum("upl,ulk->upk", pad_dg, link_jacobian(link, mean))
    s2 = torch.einsum("upk,ukl,upl->up", psi, cov, psi).clamp_min(0)
    logp = torch.nn.functional.logsigmoid(logits / torch.sqrt(1.0 + math.pi / 8.0 * s2))
    return float((logp * mask).sum())


def mixture_predicts_better(model: RewardModel, pad_db: torch.Tensor, pad_dg: torch.Tensor, mask: torch.Tensor,
                            priors: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                            contexts: Sequence[int] = (0, 2, 5, 10)) -> bool:
    """Does the mixture prior predict the seen users' labels better than the single Gaussian prior, in
    the new-user setting it is for? For each context size n: every user's first n labels give a
    posterior under each prior, scored on the log-probability of that user's remaining labels.
    ``priors`` lists the settings to score, each as (Gaussian prior means (U, L), variances (U, L),
    mixture log weights (U, K)): with the users' profiles and with them hidden, since an annotator may
    skip the profile. The mixture is kept only if its total is higher: where the profile carries more
    than the type (it echoes a user's own weights, say), the Gaussian prior's profile network can be the
    better start. The totals go to ``model.info["prior_check"]``."""
    width = pad_db.shape[1]
    slot = torch.arange(width).unsqueeze(0)
    counts = mask.sum(1, keepdim=True)
    gauss, mix = 0.0, 0.0
    for g_mu, g_var, log_w in priors:
        cov0 = torch.diag_embed(g_var)
        for n in contexts:
            users = (counts >= n + 3).float()
            ctx = mask * (slot < n).float() * users
            target = mask * (slot >= n).float() * users
            g_mean, g_cov = model._laplace_chunked(pad_db, pad_dg, ctx, g_mu, cov0, g_mu)
            m_mean, m_cov = mixture_batch_posterior(model, pad_db, pad_dg, ctx, log_w)
            gauss += predictive_score(model.link, pad_db, pad_dg, g_mean, g_cov, target)
            mix += predictive_score(model.link, pad_db, pad_dg, m_mean, m_cov, target)
    model.info["prior_check"] = {"gaussian": round(gauss, 3), "mixture": round(mix, 3), "contexts": list(contexts),
                                 "settings": len(priors)}
    return mix > gauss


def refit_under_mixture(model: RewardModel, pad_db: torch.Tensor, pad_dg: torch.Tensor, mask: torch.Tensor,
                        active: torch.Tensor, profile_feats: torch.Tensor | None, has_profile: torch.Tensor) -> None:
    """Seen users' posteriors again, now under the mixture prior; stored as their collapse."""
    log_w = mixture_user_log_weights(model, pad_db.shape[0], profile_feats, has_profile)
    mean, user_cov = mixture_batch_posterior(model, pad_db, pad_dg, mask, log_w)
    keep = active.cpu().unsqueeze(1)
    model.user_mean = torch.where(keep, mean, model.user_mean.cpu()).to(model.user_mean.device)
    model.user_cov = torch.where(keep.unsqueeze(2), user_cov, model.user_cov.cpu()).to(model.user_cov.device)


def cv_profile_var(
    model: RewardModel,
    feats: torch.Tensor,
    mean: torch.Tensor,
    post_var: torch.Tensor,
    active: torch.Tensor,
    has_profile: torch.Tensor,
    folds: int = 5,
    steps: int = 300,
) -> torch.Tensor | None:
    """Out-of-fold variance of users' latents around a profile → latent network like ``model.prior_net``
    (fresh weights per fold, fitted to the other folds' posterior means): what the profile prior leaves
    unexplained for a user it has not seen. None with too few users to split (or no profile prior)."""
    rows = torch.nonzero(active & has_profile).squeeze(1)
    if rows.numel() < 4 * folds or model.prior_net is None:
        return None
    x, y = feats[rows], mean[rows]
    gen = torch.Generator().manual_seed(0)
    fold = torch.randperm(rows.numel(), generator=gen) % folds
    pred = torch.zeros_like(y)
    width = model.config.profile_hidden
    with torch.enable_grad():
        for k in range(folds):
            fit_rows, out_rows = fold != k, fold == k
            torch.manual_seed(k)
            net = nn.Sequential(nn.Linear(x.shape[1], width), nn.SiLU(), nn.Linear(width, y.shape[1]))
            opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
            for _ in range(steps):
                opt.zero_grad()
                loss = ((net(x[fit_rows]) - y[fit_rows]) ** 2).mean()
                loss.backward()
                opt.step()
            with torch.no_grad():
                pred[out_rows] = net(x[out_rows])
    return (((y - pred) ** 2) + post_var[rows]).mean(0).clamp_min(1e-3)
