"""A mixture-of-types prior over the user latent θ, fitted to the seen users (empirical Bayes).

Pluralistic populations are clusters: users of one *type* share a taste and spread a little around it.
A single Gaussian prior over θ puts its mean between the clusters, where no user is, and its variance
across all of them, so a new user's first labels are read against a prior that fits nobody. A mixture
with one component per type reads them against the right cluster as soon as the labels (or the
profile) say which one it is, which is where cold start gains most.

* ``fit_tied_gmm``: Gaussian mixture over the seen users' posteriors N(m_i, S_i) by EM, with ONE
  covariance shared by the components (users of every type spread alike; a tied covariance needs
  L + 1 parameters per extra component rather than L(L+3)/2, so a few hundred users can support several
  types). The number of components is chosen on held-out users, so a population with one taste keeps
  one Gaussian: then nothing changes.
* Component posteriors are Laplace approximations; their weights follow the Laplace evidence of the
  labels under each component; one more label re-weights them by its predictive probability (assumed
  density filtering). ``collapse`` gives the single Gaussian (moment-matched) that predictions use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class TiedMixture:
    """π_k, μ_k and a shared Σ of a Gaussian mixture over θ."""

    log_weights: torch.Tensor  # (K,) log π_k
    means: torch.Tensor  # (K, L) μ_k
    cov: torch.Tensor  # (L, L) Σ shared by the components
    bic: float  # Bayesian information criterion of the fit (lower is better)
    responsibilities: torch.Tensor  # (N, K) posterior component probabilities of the fitted users

    @property
    def k(self) -> int:
        return int(self.log_weights.shape[0])


def log_normal(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, cov) for x (..., L) with mean / cov broadcasting as (..., L) / (..., L, L)."""
    dim = x.shape[-1]
    chol = torch.linalg.cholesky(cov)
    d = (x - mean).unsqueeze(-1)
    sol = torch.cholesky_solve(d, chol).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((x - mean) * sol).sum(-1) - 0.5 * logdet - 0.5 * dim * math.log(2 * math.pi)


def _em(means: torch.Tensor, covs: torch.Tensor, k: int, gen: torch.Generator, iters: int,
        jitter: float) -> TiedMixture:
    n, dim = means.shape
    eye = torch.eye(dim)
    # k-means++ seeding: spread the first centres over the users.
    picks = [int(torch.randint(n, (1,), generator=gen))]
    for _ in range(1, k):
        d2 = torch.cdist(means, means[picks]).min(1).values.pow(2) + 1e-12
        picks.append(int(torch.multinomial(d2 / d2.sum(), 1, generator=gen)))
    centres = means[picks].clone()
    shared = torch.cov(means.T).reshape(dim, dim) / k + jitter * eye
    log_pi = torch.full((k,), -math.log(k))
    spread = covs.mean(0)  # the users' own posterior uncertainty, added to the spread they show
    resp = torch.full((n, k), 1.0 / k)
    loglik = -math.inf
    for _ in range(iters):
        # E-step: user i's evidence under component j is N(m_i; μ_j, Σ + S̄) (S_i averaged: cheap, stable).
        lp = log_pi + log_normal(means.unsqueeze(1), centres.unsqueeze(0), shared + spread)
        total = torch.logsumexp(lp, 1)
        resp = torch.exp(lp - total.unsqueeze(1))
        new_loglik = float(total.sum())
        nk = resp.sum(0) + 1e-9
        log_pi = torch.log(nk / n)
        centres = (resp.T @ means) / nk.unsqueeze(1)
        diff = means.unsqueeze(1) - centres.unsqueeze(0)  # (n, k, L)
        scatter = torch.einsum("nk,nki,nkj->ij", resp, diff, diff) / n
        shared = scatter + jitter * eye
        if abs(new_loglik - loglik) < 1e-4 * n:
            loglik = new_loglik
            break
        loglik = new_loglik
    n_params = k * dim + dim * (dim + 1) / 2 + (k - 1)
    bic = -2 * loglik + n_params * math.log(n)
    return TiedMixture(log_pi, centres, shared + spread, bic, resp)


def fit_tied_gmm(
    means: torch.Tensor,
    covs: torch.Tensor,
    max_k: int = 6,
    min_share: float = 0.05,
    restarts: int = 3,
    iters: int = 200,
    jitter: float = 1e-3,
    folds: int = 5,
    margin: float = 0.05,
    seed: int = 0,
) -> TiedMixture:
    """Tied-covariance Gaussian mixture over users' posteriors (means (N, L), covs (N, L, L)) with K ≤
    ``max_k``. K is the smallest whose held-out log density per user (``folds``-fold cross-validation
    over users) is within ``margin`` nats of the best K's; BIC decides instead when there are too few
    users to split (< 10 per fold). BIC alone is too strict here: users' posteriors from a few dozen
    labels are wide, which blurs the types, and the penalty then keeps one Gaussian on populations
    where a mixture clearly predicts better. Fits whose smallest component holds under ``min_share``
    of the users (or fewer than 3) are not considered. K = 1 is the single empirical-Bayes Gaussian."""
    means, covs = means.double(), covs.double()
    n = means.shape[0]
    gen = torch.Generator().manual_seed(seed)

    def best_of(m: torch.Tensor, c: torch.Tensor, k: int) -> TiedMixture:
        if k == 1:
            return _em(m, c, 1, gen, iters, jitter)
        return min((_em(m, c, k, gen, iters, jitter) for _ in range(restarts)), key=lambda f: f.bic)

    fits = {1: best_of(means, covs, 1)}
    for k in range(2, max(1, max_k) + 1):
        if n < 3 * k:
            break
        fit = best_of(means, covs, k)
        share = float(fit.log_weights.exp().min())
        if share >= min_share and share * n >= 3:
            fits[k] = fit
    if len(fits) == 1:
        chosen = fits[1]
    elif n >= 10 * folds:
        fold = torch.randperm(n, generator=gen) % folds
        heldout = {}
        for k in fits:
            total = 0.0
            for f in range(folds):
                train, test = fold != f, fold == f
                part = best_of(means[train], covs[train], k)
                lp = part.log_weights + log_normal(means[test].unsqueeze(1), part.means.unsqueeze(0), part.cov)
                total += float(torch.logsumexp(lp, 1).sum())
            heldout[k] = total / n
        top = max(heldout.values())
        chosen = fits[min(k for k, v in heldout.items() if v >= top - margin)]
    else:
        chosen = min(fits.values(), key=lambda f: f.bic)
    return TiedMixture(chosen.log_weights.float(), chosen.means.float(), chosen.cov.float(), chosen.bic,
                       chosen.responsibilities.float())


def laplace_log_evidence(
    loglik: torch.Tensor, mode: torch.Tensor, post_cov: torch.Tensor, prior_mean: torch.Tensor,
    prior_cov: torch.Tensor,
) -> torch.Tensor:
    """log ∫ p(labels | θ) N(θ; μ, Σ) dθ by Laplace: log p(labels | θ̂) + log N(θ̂; μ, Σ) + (L/2) log 2π
    + ½ log |Σ̂|, batched over leading dimensions."""
    dim = mode.shape[-1]
    return (loglik + log_normal(mode, prior_mean, prior_cov) + 0.5 * dim * math.log(2 * math.pi)
            + 0.5 * torch.logdet(post_cov))


def collapse(log_weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The moment-matched Gaussian of a mixture: mean (..., L) and cov (..., L, L) from (..., K) weights."""
    w = torch.softmax(log_weights, dim=-1)
    mean = (w.unsqueeze(-1) * means).sum(-2)
    diff = means - mean.unsqueeze(-2)
    cov = (w[..., None, None] * (covs + diff.unsqueeze(-1) * diff.unsqueeze(-2))).sum(-3)
    return mean, 0.5 * (cov + cov.transpose(-1, -2))
