"""Variational Preference Learning (Poddar et al. 2024) on frozen embeddings.

* Encoder q(z | a user's labelled pairs, profile): each pair (p, c, r) goes through a pair MLP on
  ``[p, c−r, p*(c−r)]``; attention pooling (learned query) summarises the set (permutation invariant);
  the summary gives a per-label Gaussian pseudo-observation (η, λ) that is combined with the profile
  prior in natural parameters: precision = 1/σ0² + n·λ, mean = (μ0/σ0² + n·λ·η)/precision. With no
  labels the posterior *is* the profile prior (cold start).
* Decoder r(x, z) = b(x) + z·g(x): linear in z so new labels are absorbed by exact rank-one Laplace
  updates (posterior.rank_one_update) and contexts by Newton iterations.
* Loss: −log σ(r_c − r_r) on held-out target pairs of the same user + β·KL(q ‖ prior(profile)), β
  annealed from 0, free bits per latent unit against posterior collapse. Active units are reported.
* Reward scaling (the paper's VPL-SPO idea): ``reward(..., scaled=True)`` is the expected win-rate
  against reference responses, which puts every user's reward on the same [0, 1] scale.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import RewardModel
from .posterior import gaussian_kl, nll

LOGVAR_MIN, LOGVAR_MAX = -8.0, 4.0


class VPLModel(RewardModel):
    kind = "vpl"
    batching = "users"

    def __init__(self, config, user_ids=(), profile_encoder=None):
        super().__init__(config, user_ids, profile_encoder)
        config = self.config  # resolved: 8 latent units when none are asked for
        hid, latent, width = self.trunk.out_dim, config.latent_dim, config.encoder_hidden
        self.base_head = nn.Linear(hid, 1)
        self.basis_head = nn.Linear(hid, latent)
        self.pair_encoder = nn.Sequential(
            nn.Linear(3 * config.dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()
        )
        self.attn_query = nn.Parameter(torch.randn(width) / math.sqrt(width))
        self.attn_key = nn.Linear(width, width)
        self.attn_value = nn.Linear(width, width)
        self.evidence_head = nn.Linear(width + 1, 2 * latent)

    def basis(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base_head(h).squeeze(-1), self.basis_head(h)

    def prior_logvar_clamped(self) -> torch.Tensor:
        return self.prior_logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def encode(
        self,
        prompt: torch.Tensor,
        chosen: torch.Tensor,
        rejected: torch.Tensor,
        mask: torch.Tensor,
        prior_mu: torch.Tensor,
        prior_logvar: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Amortised q(z | pairs): inputs (U, C, d) with mask (U, C); prior (U, L). Returns mean, logvar (U, L)."""
        diff = chosen - rejected
        e = self.pair_encoder(torch.cat([prompt, diff, prompt * diff], dim=-1))
        scores = (self.attn_key(e) @ self.attn_query) / math.sqrt(e.shape[-1])
        scores = scores.masked_fill(mask <= 0, -1e9)
        attn = torch.softmax(scores, dim=-1) * (mask > 0)
        pooled = (attn.unsqueeze(-1) * self.attn_value(e)).sum(1)
        n = mask.sum(1, keepdim=True)
        eta, lam_raw = self.evidence_head(torch.cat([pooled, torch.log1p(n)], dim=-1)).chunk(2, dim=-1)
        lam = F.softplus(lam_raw)
        prec0 = torch.exp(-prior_logvar).expand_as(eta)
        prec = prec0 + n * lam
        mean = (prec0 * prior_mu + n * lam * eta) / prec
        return mean, -torch.log(prec)

    @torch.no_grad()
    def amortized_posterior(self, prompt, chosen, rejected, profile=None):
        """q(z | pairs) from the encoder alone (the Laplace posterior() is the default; this is VPL's own)."""
        from .posterior import Posterior

        prior = self.prior(profile)
        p, c, r = (x.to(self.device, torch.float32).unsqueeze(0) for x in (prompt, chosen, rejected))
        mask = torch.ones(1, p.shape[1], device=self.device)
        mu0 = prior.mean.to(self.device).unsqueeze(0)
        lv0 = prior.cov.diagonal().log().to(self.device)
        mean, logvar = self.encode(p, c, r, mask, mu0, lv0)
        return Posterior(mean[0].cpu(), torch.diag(logvar[0].exp().cpu()), p.shape[1])

    def training_loss(
        self, batch: dict[str, torch.Tensor], step_frac: float, fit: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:
        prior_mu = self.prior_mean(batch.get("profile"))
        prior_mu = prior_mu.expand(batch["ctx_mask"].shape[0], -1)
        prior_lv = self.prior_logvar_clamped()
        mean, logvar = self.encode(
            batch["ctx_prompt"], batch["ctx_chosen"], batch["ctx_rejected"], batch["ctx_mask"], prior_mu, prior_lv
        )
        n_users, n_tgt, dim = batch["tgt_prompt"].shape
        db, dg = self.raw_deltas(
            batch["tgt_prompt"].reshape(-1, dim),
            batch["tgt_chosen"].reshape(-1, dim),
            batch["tgt_rejected"].reshape(-1, dim),
        )
        db, dg = db.reshape(n_users, n_tgt), dg.reshape(n_users, n_tgt, -1)
        if self.config.vpl_likelihood == "probit":
            # z marginalised in closed form: E_q σ(Δb + z·Δg) ≈ σ(m / √(1 + π s²/8)).
            m = db + (dg * mean.unsqueeze(1)).sum(-1)
            s2 = (dg * dg * logvar.exp().unsqueeze(1)).sum(-1)
            logits = m / torch.sqrt(1.0 + math.pi / 8.0 * s2)
        else:
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            logits = db + (dg * z.unsqueeze(1)).sum(-1)
        tmask = batch["tgt_mask"]
        n_targets = tmask.sum().clamp_min(1)
        rec = (nll(logits.float()) * tmask).sum() / n_targets
        kl_dims = gaussian_kl(mean, logvar, prior_mu, prior_lv.expand_as(mean)).mean(0)  # (L,)
        kl_fb = torch.clamp(kl_dims, min=self.config.free_bits)
        beta = fit.beta * min(1.0, step_frac / max(fit.kl_warmup, 1e-6))
        per_user_targets = n_targets / n_users
        loss = rec + beta * kl_fb.sum() / per_user_targets
        return loss, {"nll": float(rec.detach()), "kl": float(kl_dims.detach().sum()), "beta": beta}

    def export_head(self) -> dict[str, torch.Tensor]:
        out = {
            "head.base_w": self.base_head.weight.reshape(-1),
            "head.base_b": self.base_head.bias.reshape(1),
            "head.basis_w": self.basis_head.weight,
            "head.basis_b": self.basis_head.bias,
        }
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}
