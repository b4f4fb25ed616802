"""Gaussian posteriors over a user's latent, and the closed-form maths every model shares.

Every model scores a pair as ``logit = Δb + link(θ)·Δg`` where Δb (n,) and Δg (n, L) come from the
network and θ ∈ R^L is the user's latent (VPL: z with the identity link; PAL: mixture logits with the
softmax link; BT: L = 0). A user is a Gaussian ``N(mean, cov)`` over θ. Predictions linearise the link at
the mean and use the probit approximation; updates are Laplace / Gauss–Newton steps, so a new label costs
a rank-one update rather than any retraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

LINKS = ("identity", "softmax")
_LAMBDA2 = math.pi / 8.0  # σ(x) ≈ Φ(λx) with λ² = π/8
_BALD_C2 = math.pi * math.log(2.0) / 2.0  # Houlsby et al. (2011): C² = π ln2 / 2


@dataclass
class Posterior:
    """A user's Gaussian belief over the model latent θ."""

    mean: torch.Tensor  # (L,) posterior mean of θ
    cov: torch.Tensor  # (L, L) posterior covariance of θ
    n_labels: int = 0  # how many labels went into it (context + updates)
    user_id: str | None = None  # the seen user it belongs to, when known
    # Under a mixture-of-types prior (mixture.py): the per-type posteriors behind mean / cov, which are
    # their moment-matched collapse — (log weights (K,), means (K, L), covs (K, L, L)); None otherwise.
    components: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def std(self) -> torch.Tensor:
        return self.cov.diagonal().clamp_min(0).sqrt()

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k draws of θ, shape (k, L)."""
        eps = torch.randn(k, self.dim, generator=generator, dtype=self.mean.dtype)
        return self.mean + eps @ _safe_cholesky(self.cov).T

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for storing a user's state in a database)."""
        out: dict[str, Any] = {
            "mean": self.mean.tolist(),
            "cov": self.cov.tolist(),
            "n_labels": self.n_labels,
            "user_id": self.user_id,
        }
        if self.components is not None:
            log_w, means, covs = self.components
            out["components"] = {"log_weights": log_w.tolist(), "means": means.tolist(), "covs": covs.tolist()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Posterior:
        mean = torch.tensor(data["mean"], dtype=torch.float32).reshape(-1)
        dim = mean.shape[0]
        cov = torch.tensor(data["cov"], dtype=torch.float32).reshape(dim, dim)
        comps = data.get("components")
        components = None
        if comps:
            log_w = torch.tensor(comps["log_weights"], dtype=torch.float32).reshape(-1)
            k = log_w.shape[0]
            components = (
                log_w,
                torch.tensor(comps["means"], dtype=torch.float32).reshape(k, dim),
                torch.tensor(comps["covs"], dtype=torch.float32).reshape(k, dim, dim),
            )
        return cls(mean, cov, int(data.get("n_labels", 0)), data.get("user_id"), components)


@dataclass
class PairDeltas:
    """Network outputs for n candidate pairs, reusable across posteriors (e.g. an active-learning pool)."""

    db: torch.Tensor  # (n,) base-reward difference r_base(a) − r_base(b)
    dg: torch.Tensor  # (n, L) basis difference g(a) − g(b)

    def __len__(self) -> int:
        return int(self.db.shape[0])


def _safe_cholesky(cov: torch.Tensor) -> torch.Tensor:
    if cov.numel() == 0:
        return cov
    sym = 0.5 * (cov + cov.T)
    jitter = 1e-6 * sym.diagonal().abs().mean().clamp_min(1e-6)
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(sym + jitter * torch.eye(sym.shape[0], dtype=sym.dtype))
        if int(info) == 0:
            return chol
        jitter *= 10
    return torch.diag(sym.diagonal().clamp_min(0).sqrt())


def link_fn(link: str, theta: torch.Tensor) -> torch.Tensor:
    if link == "identity":
        return theta
    if link == "softmax":
        return torch.softmax(theta, dim=-1)
    raise ValueError(f"unknown link {link!r}")


def link_jacobian(link: str, theta: torch.Tensor) -> torch.Tensor:
    """d link(θ) / dθ for θ of shape (..., L): (..., L, L), symmetric for both links."""
    eye = torch.eye(theta.shape[-1], dtype=theta.dtype, device=theta.device)
    if link == "identity":
        return eye.expand(*theta.shape[:-1], -1, -1)
    w = torch.softmax(theta, dim=-1)
    return torch.diag_embed(w) - w.unsqueeze(-1) * w.unsqueeze(-2)


def logit_moments(
    post: Posterior, db: torch.Tensor, dg: torch.Tensor, link: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the pair logit under the (linearised) posterior: two (n,) tensors."""
    if post.dim == 0:
        return db, torch.zeros_like(db)
    w = link_fn(link, post.mean)
    m = db + dg @ w
    psi = dg @ link_jacobian(link, post.mean)
    s2 = ((psi @ post.cov) * psi).sum(-1).clamp_min(0)
    return m, s2


def probit_proba(m: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """E[σ(x)] for x ~ N(m, s2) (MacKay's probit approximation)."""
    return torch.sigmoid(m / torch.sqrt(1.0 + _LAMBDA2 * s2))


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of a Bernoulli(p)."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def bald(m: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Mutual information (bits) between the label and θ (Houlsby et al. 2011, closed form).

    Both entropies use the same approximation h(Φ(x)) ≈ exp(−x²/(π ln 2)); mixing it with the exact
    entropy for the total would leave ~0.05–0.08 bits of phantom information on pairs the model is
    already sure about, and info_gain would keep choosing them.
    """
    total = torch.exp(-_LAMBDA2 * m * m / (2 * _BALD_C2 * (1 + _LAMBDA2 * s2)))
    a2 = _LAMBDA2 * s2 + _BALD_C2
    expected = math.sqrt(_BALD_C2) / torch.sqrt(a2) * torch.exp(-_LAMBDA2 * m * m / (2 * a2))
    return (total - expected).clamp_min(0)


def laplace(
    db: torch.Tensor,
    dg: torch.Tensor,
    mask: torch.Tensor,
    mu0: torch.Tensor,
    cov0: torch.Tensor,
    link: str,
    iters: int = 20,
    init: torch.Tensor | None = None,
    max_step: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Laplace approximation of p(θ | labels) ∝ N(θ; mu0, cov0) Π σ(Δb + link(θ)·Δg).

    db (U, P), dg (U, P, L), mask (U, P) (1 = real label), mu0 (U, L), cov0 (U, L, L). The chosen
    response is always first, so every label is y = 1. Gauss–Newton iterations (exact Newton for the
    identity link) with the step length capped at ``max_step``. Returns mean (U, L) and cov (U, L, L).
    """
    prec0 = torch.linalg.inv(cov0)
    theta = mu0.clone() if init is None else init.clone()
    mask = mask.to(db.dtype)
    for _ in range(iters):
        w = link_fn(link, theta)
        jac = link_jacobian(link, theta)
        logits = db + torch.einsum("upl,ul->up", dg, w)
        psi = torch.einsum("upl,ulk->upk", dg, jac)
        prob = torch.sigmoid(logits)
        resid = (1 - prob) * mask
        grad = torch.einsum("upk,up->uk", psi, resid) - torch.einsum("ukl,ul->uk", prec0, theta - mu0)
        weight = prob * (1 - prob) * mask
        hess = prec0 + torch.einsum("upk,up,upl->ukl", psi, weight, psi)
        step = torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
        norm = step.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        step = step * (max_step / norm).clamp(max=1.0)
        theta = theta + step
        if float(norm.max()) < 1e-5:
            break
    w = link_fn(link, theta)
    jac = link_jacobian(link, theta)
    logits = db + torch.einsum("upl,ul->up", dg, w)
    psi = torch.einsum("upl,ulk->upk", dg, jac)
    prob = torch.sigmoid(logits)
    weight = prob * (1 - prob) * mask
    hess = prec0 + torch.einsum("upk,up,upl->ukl", psi, weight, psi)
    cov = torch.linalg.inv(hess)
    return theta, 0.5 * (cov + cov.transpose(-1, -2))


def laplace_chunked(
    db: torch.Tensor,
    dg: torch.Tensor,
    mask: torch.Tensor,
    mu0: torch.Tensor,
    cov0: torch.Tensor,
    link: str,
    iters: int = 20,
    init: torch.Tensor | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``laplace`` over ``chunk`` users at a time (the same result; the (U, P, L, L) temporaries of
    thousands of users at once would not fit in memory)."""
    means, covs = [], []
    for i in range(0, db.shape[0], chunk):
        m, c = laplace(
            db[i : i + chunk],
            dg[i : i + chunk],
            mask[i : i + chunk],
            mu0[i : i + chunk],
            cov0[i : i + chunk],
            link,
            iters=iters,
            init=None if init is None else init[i : i + chunk],
        )
        means.append(m)
        covs.append(c)
    return torch.cat(means), torch.cat(covs)


def rank_one_update(post: Posterior, db: torch.Tensor, dg: torch.Tensor, link: str) -> Posterior:
    """Posterior after ONE more label (chosen first): a rank-one Laplace step, no retraining.

    Exact Laplace for the identity link; for softmax the link is linearised at the current mean.
    db is a scalar tensor, dg (L,).
    """
    if post.dim == 0:
        return Posterior(post.mean, post.cov, post.n_labels + 1, post.user_id)
    w0 = link_fn(link, post.mean)
    psi = link_jacobian(link, post.mean) @ dg
    m0 = float(db + dg @ w0)
    cpsi = post.cov @ psi
    s2 = float(psi @ cpsi)
    # The mode lies on θ = μ + c Σψ with c = 1 − σ(m0 + c s2): a 1-D monotone equation, solved by Newton.
    c = 0.0
    for _ in range(20):
        sig = 1.0 / (1.0 + math.exp(-(m0 + c * s2)))
        f = c - 1.0 + sig
        fp = 1.0 + sig * (1.0 - sig) * s2
        c_new = min(max(c - f / fp, 0.0), 1.0)
        if abs(c_new - c) < 1e-9:
            c = c_new
            break
        c = c_new
    sig = 1.0 / (1.0 + math.exp(-(m0 + c * s2)))
    weight = sig * (1.0 - sig)
    mean = post.mean + c * cpsi
    cov = post.cov - (weight / (1.0 + weight * s2)) * torch.outer(cpsi, cpsi)
    return Posterior(mean, 0.5 * (cov + cov.T), post.n_labels + 1, post.user_id)


def mixture_rank_one_update(post: Posterior, db: torch.Tensor, dg: torch.Tensor, link: str) -> Posterior:
    """One more label under a mixture posterior: each component takes its rank-one Laplace step and is
    re-weighted by the probability it gave the label (assumed density filtering); mean / cov are the
    collapse of the result. K rank-one steps: still no retraining."""
    from .mixture import collapse

    if post.components is None:
        return rank_one_update(post, db, dg, link)
    log_w, means, covs = post.components
    new_means, new_covs, log_lik = [], [], []
    for k in range(log_w.shape[0]):
        comp = Posterior(means[k], covs[k])
        m, s2 = logit_moments(comp, db.reshape(1), dg.reshape(1, -1), link)
        log_lik.append(F.logsigmoid(m / torch.sqrt(1.0 + _LAMBDA2 * s2))[0])
        step = rank_one_update(comp, db, dg, link)
        new_means.append(step.mean)
        new_covs.append(step.cov)
    new_log_w = torch.log_softmax(log_w + torch.stack(log_lik), 0)
    stacked = (new_log_w, torch.stack(new_means), torch.stack(new_covs))
    mean, cov = collapse(*stacked)
    return Posterior(mean, cov, post.n_labels + 1, post.user_id, stacked)


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) per dimension (diagonal Gaussians)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)


def nll(logits: torch.Tensor) -> torch.Tensor:
    """The Bradley–Terry loss per pair, chosen first: −log σ(r_c − r_r)."""
    return -F.logsigmoid(logits)
