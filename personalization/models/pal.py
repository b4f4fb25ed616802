"""PAL-B-style pluralistic alignment (Chen et al., ICLR 2025): K prototypes, per-user simplex weights.

A shared projector maps a (prompt, response) to f(x) ∈ R^D; K learned prototype points a_k live in the
same space; user u has mixture weights w_u = softmax(θ_u) on the simplex and ideal point Σ_k w_uk a_k.
``pal_form = "dot"``: r(x, u) = <f(x), Σ_k w_uk a_k> (K prototype reward heads <f, a_k> mixed by w);
``"distance"``: r(x, u) = −‖f(x) − Σ_k w_uk a_k‖². Both are affine in w, so a user is a Gaussian over θ
with the softmax link, and a new user fits only θ (K numbers) from their labels (Gauss–Newton steps,
started from the profile prior). Training is MAP: per-user θ_u and the network jointly, with a Gaussian
prior θ_u ~ N(μ(profile_u), σ²) whose mean network is learned at the same time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import RewardModel
from .posterior import nll


class PALModel(RewardModel):
    kind = "pal"
    link = "softmax"

    def __init__(self, config, user_ids=(), profile_encoder=None):
        if config.pal_form not in ("dot", "distance"):
            raise ValueError(f"pal_form must be 'dot' or 'distance', not {config.pal_form!r}")
        super().__init__(config, user_ids, profile_encoder)
        k, d = self.config.latent_dim, self.config.pal_dim  # resolved: 8 prototypes when none are asked for
        self.proj = nn.Linear(self.trunk.out_dim, d)
        self.prototypes = nn.Parameter(torch.randn(k, d) / d**0.5)
        gen = torch.Generator().manual_seed(0)
        self.user_logits = nn.Parameter(0.1 * torch.randn(len(self.user_ids), k, generator=gen))

    def basis(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.proj(h)
        if self.config.pal_form == "dot":
            return f.new_zeros(f.shape[0]), f @ self.prototypes.T
        return -(f * f).sum(-1), 2 * f @ self.prototypes.T

    def reward_offset(self, w: torch.Tensor) -> torch.Tensor:
        if self.config.pal_form == "dot":
            return torch.zeros((), dtype=w.dtype, device=w.device)
        point = w @ self.prototypes
        return -(point * point).sum(-1)

    def training_loss(
        self, batch: dict[str, torch.Tensor], step_frac: float, fit: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:
        db, dg = self.raw_deltas(batch["prompt"], batch["chosen"], batch["rejected"])
        theta = self.user_logits[batch["user"]]
        logits = db + (dg * torch.softmax(theta, dim=-1)).sum(-1)
        rec = nll(logits.float()).mean()
        mu = self.prior_mean(batch.get("profile"))
        var = self.config.prior_std**2
        # The Gaussian prior on θ_u, spread over the user's labels (MAP for the whole data set).
        prior = (0.5 * ((theta - mu) ** 2).sum(-1) / var / batch["user_count"]).mean()
        loss = rec + fit.pal_prior_weight * prior
        return loss, {"nll": float(rec.detach()), "prior": float(prior.detach())}

    def export_head(self) -> dict[str, torch.Tensor]:
        dist = self.config.pal_form == "distance"
        k, d = self.prototypes.shape
        out = {
            "head.proj_w": self.proj.weight,
            "head.proj_b": self.proj.bias,
            "head.base_w": torch.zeros(d),
            "head.base_b": torch.zeros(1),
            "head.sqnorm": torch.tensor([-1.0 if dist else 0.0]),
            "head.basis_w": (2.0 if dist else 1.0) * self.prototypes,
            "head.basis_b": torch.zeros(k),
            "head.prototypes": self.prototypes,
        }
        return {key: v.detach().float().cpu().contiguous() for key, v in out.items()}
