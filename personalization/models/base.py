"""The interface every reward model shares, and everything that only depends on it.

A model maps a (prompt, response) embedding pair to ``r = b(x) + link(θ)·g(x)``: a base reward ``b`` and
an L-dimensional basis ``g`` from a shared trunk, and a per-user latent θ (``Posterior``). Subclasses
define ``basis`` (and ``reward_offset`` when the reward has a user-only term) and their training loss;
inference — posteriors from context, one-label updates, predictions, BALD — lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..features import Trunk
from ..profiles import ProfileEncoder
from .posterior import (
    PairDeltas,
    Posterior,
    bald,
    binary_entropy,
    laplace,
    link_fn,
    link_jacobian,
    logit_moments,
    mixture_rank_one_update,
    probit_proba,
    rank_one_update,
)

Context = Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@contextmanager
def few_threads(active: bool = True) -> Iterator[None]:
    """Run tiny CPU work on one thread: some torch CPU kernels (erf, tanh …) fan small tensors out to
    the thread pool, and the pool's barrier then costs milliseconds per op on a busy machine."""
    n = torch.get_num_threads()
    if not active or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class ModelConfig:
    kind: str = "bt"  # registry key: "bt" | "vpl" | "pal"
    dim: int = 384  # embedding width of prompts and responses
    hidden: list[int] = field(default_factory=lambda: [256])  # trunk layer widths
    features: str = "p_r_pr"  # blocks of concat[p, r, p*r] the trunk sees (features.FEATURE_KINDS)
    dropout: float = 0.0  # trunk dropout during training
    latent_dim: int = 0  # L: VPL latent size, PAL number of prototypes K, 0 for BT
    profile_dim: int = 0  # width of profile feature vectors; 0 = no profile prior
    profile_hidden: int = 64  # hidden width of the profile → prior-mean MLP
    prior_std: float = 1.0  # initial std of the prior over θ (refitted by empirical Bayes after training)
    encoder_hidden: int = 128  # VPL: width of the pair encoder and attention pooling
    free_bits: float = 0.05  # VPL: KL floor per latent unit (nats) against posterior collapse
    reward_scaling: bool = False  # VPL: reward() returns the win-rate against reference responses by default
    vpl_likelihood: str = "sample"  # VPL: "sample" (ELBO, one reparameterised z) | "probit" (z marginalised)
    pal_dim: int = 32  # PAL: width of the shared projector f(x) the ideal points live in
    pal_form: str = "dot"  # PAL: "dot" (r = <f(x), Σ w_k a_k>) or "distance" (r = −‖f(x) − Σ w_k a_k‖²)
    n_reference: int = 128  # responses kept for reward scaling
    laplace_iters: int = 20  # Newton iterations for posteriors from a context
    mixture_max_k: int = 6  # most user types in the mixture prior over θ fitted after training (K chosen on
    # held-out users; K = 1 keeps the single Gaussian prior); 0 or 1 = no mixture
    has_population: bool = False  # a population Bradley–Terry model rides along (guard.py): the reward is
    # personal_weight · (own reward) + (1 − personal_weight) · (population reward)
    personal_weight: float = 1.0  # weight of the personal part (0 = predicts exactly like the population BT);
    # chosen out-of-fold on held-out users by the population guard
    temperature: float = 1.0  # divides every predicted logit (mean and spread): calibration fitted on
    # held-out labels; posteriors are fitted on untempered logits


class RewardModel(nn.Module):
    """Base class: shared trunk, profile prior, per-user posteriors, and all inference."""

    # Buffers (registered in __init__; declared here for type checkers).
    prior_var_profile: torch.Tensor
    prior_var_population: torch.Tensor
    user_mean: torch.Tensor
    user_cov: torch.Tensor
    user_n: torch.Tensor
    reference_prompt: torch.Tensor
    reference_response: torch.Tensor
    mix_log_weights: torch.Tensor
    mix_means: torch.Tensor
    mix_cov: torch.Tensor
    mix_profile_w: torch.Tensor

    kind = "base"
    link = "identity"  # how θ becomes the weights on g: "identity" (VPL) or "softmax" (PAL)
    batching = "pairs"  # training batches: "pairs" (shuffled labels) or "users" (context/target sets)

    def __init__(
        self,
        config: ModelConfig,
        user_ids: Sequence[str] = (),
        profile_encoder: ProfileEncoder | None = None,
    ):
        super().__init__()
        self.config = config
        self.user_ids: list[str] = list(user_ids)
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.profile_encoder = profile_encoder
        self.info: dict[str, Any] = {}  # training facts saved with the model (active units, fit time …)
        self.encoder_info: dict[str, Any] = {}  # the text encoder it was trained with (model_id, model_path)
        self.trunk = Trunk(config.dim, config.hidden, config.features, config.dropout)
        latent, n_users = config.latent_dim, len(self.user_ids)
        self.prior_net: nn.Module | None = None
        if config.profile_dim > 0 and latent > 0:
            last = nn.Linear(config.profile_hidden, latent)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.prior_net = nn.Sequential(nn.Linear(config.profile_dim, config.profile_hidden), nn.SiLU(), last)
        self.prior_mean0 = nn.Parameter(torch.zeros(latent))
        self.prior_logvar = nn.Parameter(torch.full((latent,), 2 * math.log(config.prior_std)))
        # Empirical-Bayes prior variances set after training: with a profile / without one.
        self.register_buffer("prior_var_profile", torch.full((latent,), config.prior_std**2))
        self.register_buffer("prior_var_population", torch.full((latent,), config.prior_std**2))
        self.register_buffer("user_mean", torch.zeros(n_users, latent))
        self.register_buffer("user_cov", torch.eye(latent).expand(n_users, latent, latent).clone())
        self.register_buffer("user_n", torch.zeros(n_users, dtype=torch.long))
        self.register_buffer("reference_prompt", torch.zeros(0, config.dim))
        self.register_buffer("reference_response", torch.zeros(0, config.dim))
        # Mixture-of-types prior (mixture.py), empty until fitted: population log weights (K,), component
        # means (K, L), the shared covariance (L, L), and profile features → weight logits (F, K).
        self.register_buffer("mix_log_weights", torch.zeros(0))
        self.register_buffer("mix_means", torch.zeros(0, latent))
        self.register_buffer("mix_cov", torch.zeros(latent, latent))
        self.register_buffer("mix_profile_w", torch.zeros(config.profile_dim, 0))
        # The population model the personal reward backs off to (guard.py); None = no back-off.
        self.population: RewardModel | None = None
        if config.has_population and config.kind != "bt":
            from . import build_model

            self.population = build_model(population_config(config))

    # ---- what subclasses define -------------------------------------------------------------------
    def basis(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base reward (n,) and basis (n, L) from trunk outputs h (n, H)."""
        raise NotImplementedError

    def reward_offset(self, w: torch.Tensor) -> torch.Tensor:
        """User-only term of the reward (cancels in preferences); w = link(θ)."""
        return torch.zeros((), dtype=w.dtype, device=w.device)

    def training_loss(
        self, batch: dict[str, torch.Tensor], step_frac: float, fit: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    # ---- helpers ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.prior_mean0.device

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def has_mixture(self) -> bool:
        """Whether the prior over θ is a mixture of user types (fitted, with K ≥ 2)."""
        return self.latent_dim > 0 and self.mix_log_weights.numel() >= 2

    def _mixture_log_weights(self, profiles: Sequence[Mapping[str, Any] | None]) -> torch.Tensor:
        """log π_k per profile (U, K): the population weights shifted by the profile (a softmax
        regression on its features; a missing profile is its own feature row, as in training)."""
        base = self.mix_log_weights.float().cpu()
        if self.profile_encoder is None or self.mix_profile_w.numel() == 0:
            return torch.log_softmax(base.expand(len(profiles), -1), dim=-1)
        feats = self.profile_features(profiles).float().cpu()
        return torch.log_softmax(base + feats @ self.mix_profile_w.float().cpu(), dim=-1)

    def _batch(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        """Inputs as (n, d) float tensors on the model device; a single (d,) prompt broadcasts."""
        out = [x.to(self.device, torch.float32) for x in xs]
        n = max(x.shape[0] if x.dim() == 2 else 1 for x in out)
        return [x.reshape(1, -1).expand(n, -1) if x.dim() == 1 or x.shape[0] == 1 else x for x in out]

    def raw_deltas(self, p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Δb (n,) and Δg (n, L) of r(a) − r(b) for (n, d) inputs on the model device (differentiable)."""
        h_a, h_b = self.trunk.forward_pair(p, a, b)
        b_a, g_a = self.basis(h_a)
        b_b, g_b = self.basis(h_b)
        db, dg = b_a - b_b, g_a - g_b
        if self.population is not None:
            # Back-off to the population: the blend stays affine in link(θ), so all inference is unchanged.
            lam = self.config.personal_weight
            pop_db, _ = self.population.raw_deltas(p, a, b)
            db, dg = lam * db + (1.0 - lam) * pop_db, lam * dg
        return db, dg

    def attach_population(self, population: RewardModel, personal_weight: float) -> None:
        """Back the personal reward off to ``population`` (a BT model on the same embeddings)."""
        from . import build_model

        # A fresh BT holding only the network: the population's own users and reference set stay behind.
        fresh = build_model(population_config(self.config))
        fresh.trunk.load_state_dict(population.trunk.state_dict())
        fresh.get_submodule("base_head").load_state_dict(population.get_submodule("base_head").state_dict())
        self.config.has_population = True
        self.config.personal_weight = float(personal_weight)
        self.population = fresh.to(self.device).eval()

    def deltas(self, prompt: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Δb (n,) and Δg (n, L) of r(a) − r(b), in float32 on the CPU."""
        db, dg = self.raw_deltas(*self._batch(prompt, a, b))
        return db.float().cpu(), dg.float().cpu()

    def _deltas_chunked(
        self, prompt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, chunk: int = 8192
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dbs, dgs = [], []
        for i in range(0, a.shape[0], chunk):
            db, dg = self.deltas(prompt[i : i + chunk], a[i : i + chunk], b[i : i + chunk])
            dbs.append(db)
            dgs.append(dg)
        if not dbs:
            return torch.zeros(0), torch.zeros(0, self.latent_dim)
        return torch.cat(dbs), torch.cat(dgs)

    def profile_features(self, profiles: Sequence[Mapping[str, Any] | None]) -> torch.Tensor:
        if self.profile_encoder is None or self.config.profile_dim == 0:
            return torch.zeros(len(profiles), 0)
        return self.profile_encoder.transform(profiles)

    def prior_mean(self, features: torch.Tensor | None) -> torch.Tensor:
        """Prior mean of θ for profile feature rows (U, F) → (U, L); None → population mean (1, L)."""
        if self.prior_net is None or features is None:
            return self.prior_mean0.unsqueeze(0)
        return self.prior_mean0 + self.prior_net(features.to(self.device))

    # ---- per-user API -----------------------------------------------------------------------------
    @torch.no_grad()
    def prior(self, profile: Mapping[str, Any] | None = None) -> Posterior:
        """The belief about a new user before any label: predicted from the profile when given."""
        if not self.has_mixture:
            return self._gaussian_prior(profile)
        from .mixture import collapse

        latent, k = self.latent_dim, self.mix_log_weights.shape[0]
        comps = (
            self._mixture_log_weights([profile or None])[0],
            self.mix_means.float().cpu().clone(),
            self.mix_cov.float().cpu().expand(k, latent, latent).clone(),
        )
        mean, cov = collapse(*comps)
        return Posterior(mean, cov, 0, components=comps)

    def _gaussian_prior(self, profile: Mapping[str, Any] | None) -> Posterior:
        """The single-Gaussian prior: mean from the profile network, empirical-Bayes variances."""
        latent = self.latent_dim
        has_profile = bool(profile) and self.prior_net is not None
        feats = self.profile_features([profile]) if self.prior_net is not None else None
        with few_threads(self.device.type == "cpu"):
            mean = self.prior_mean(feats)[0].detach().float().cpu().clone()
        var = self.prior_var_profile if has_profile else self.prior_var_population
        return Posterior(mean.reshape(latent), torch.diag(var.float().cpu()), 0)

    @torch.no_grad()
    def posterior(
        self,
        context: Context | None = None,
        profile: Mapping[str, Any] | None = None,
        start: Posterior | None = None,
    ) -> Posterior:
        """Belief about a user from their labelled pairs (prompt, chosen, rejected) and profile.

        ``context`` is a list of (prompt_emb, chosen_emb, rejected_emb) or a tuple of three (n, d) tensors.
        ``start`` replaces the profile prior (e.g. a seen user's posterior plus new context).
        """
        start = start or self.prior(profile)
        triple = _stack_context(context)
        if triple is None or self.latent_dim == 0:
            n = 0 if triple is None else int(triple[0].shape[0])
            return Posterior(start.mean, start.cov, start.n_labels + n, start.user_id, start.components)
        with few_threads(self.device.type == "cpu" and triple[0].shape[0] <= 4096):
            db, dg = self._deltas_chunked(triple[0], triple[1], triple[2])
            if start.components is not None:
                return self._mixture_posterior(db, dg, start)
            mean, cov = self._laplace_one(db, dg, start)
        return Posterior(mean[0], cov[0], start.n_labels + int(db.shape[0]), start.user_id)

    def _mixture_posterior(self, db: torch.Tensor, dg: torch.Tensor, start: Posterior) -> Posterior:
        """Labels (Δb (n,), Δg (n, L)) under a mixture start: one Laplace posterior per component,
        re-weighted by each component's Laplace evidence, collapsed for predictions."""
        from .mixture import collapse

        assert start.components is not None
        log_w, means, covs = start.components
        n = db.shape[0]
        comp_w, modes, post_covs = self._component_posteriors(
            db.unsqueeze(0), dg.unsqueeze(0), torch.ones(1, n), log_w.unsqueeze(0), means.unsqueeze(0),
            covs.unsqueeze(0))
        comps = (comp_w[0], modes[0], post_covs[0])
        mean, cov = collapse(*comps)
        return Posterior(mean, cov, start.n_labels + n, start.user_id, comps)

    def _component_posteriors(self, db: torch.Tensor, dg: torch.Tensor, mask: torch.Tensor, log_w: torch.Tensor,
                              means: torch.Tensor, covs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-component posteriors of U users: labels db (U, P), dg (U, P, L), mask (U, P); component
        prior log weights (U, K), means (U, K, L), covs (U, K, L, L). Each user × component is one
        Laplace fit (batched), weighted by prior weight × Laplace evidence. Returns the new log weights
        (U, K), modes (U, K, L) and covariances (U, K, L, L)."""
        from .mixture import laplace_log_evidence

        n_users, width = db.shape
        k, latent = log_w.shape[1], self.latent_dim
        flat_db = db.unsqueeze(1).expand(n_users, k, width).reshape(n_users * k, width)
        flat_dg = dg.unsqueeze(1).expand(n_users, k, width, latent).reshape(n_users * k, width, latent)
        flat_mask = mask.unsqueeze(1).expand(n_users, k, width).reshape(n_users * k, width)
        mu0 = means.reshape(n_users * k, latent)
        cov0 = covs.reshape(n_users * k, latent, latent)
        modes, post_covs = self._laplace_chunked(flat_db, flat_dg, flat_mask, mu0, cov0, mu0)
        logits = flat_db + torch.einsum("npl,nl->np", flat_dg, link_fn(self.link, modes))
        loglik = (torch.nn.functional.logsigmoid(logits) * flat_mask).sum(-1)
        evidence = laplace_log_evidence(loglik, modes, post_covs, mu0, cov0).reshape(n_users, k)
        return (torch.log_softmax(log_w + evidence, dim=-1), modes.reshape(n_users, k, latent),
                post_covs.reshape(n_users, k, latent, latent))

    def _laplace_one(self, db: torch.Tensor, dg: torch.Tensor, start: Posterior) -> tuple[torch.Tensor, torch.Tensor]:
        return laplace(
            db.unsqueeze(0),
            dg.unsqueeze(0),
            torch.ones_like(db).unsqueeze(0),
            start.mean.unsqueeze(0),
            start.cov.unsqueeze(0),
            self.link,
            iters=self.config.laplace_iters,
        )

    def user_posterior(self, user_id: str) -> Posterior:
        """The stored posterior of a user seen in training (KeyError for unknown users)."""
        i = self.user_index[user_id]
        return Posterior(
            self.user_mean[i].float().cpu().clone(),
            self.user_cov[i].float().cpu().clone(),
            int(self.user_n[i]),
            user_id,
        )

    @torch.no_grad()
    def update(self, post: Posterior, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> Posterior:
        """The posterior after ONE more label — a rank-one Laplace step (no retraining)."""
        with few_threads(self.device.type == "cpu"):
            db, dg = self.deltas(prompt, chosen, rejected)
            if post.components is not None:
                return mixture_rank_one_update(post, db[0], dg[0], self.link)
            return rank_one_update(post, db[0], dg[0], self.link)

    @torch.no_grad()
    def pair_deltas(self, prompt: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> PairDeltas:
        """Network outputs for n pairs; pass them as ``prompt`` (with a = b = None) to predict_proba,
        info_gain, entropy … to re-score a fixed candidate pool without re-running the network."""
        p, a, b = self._batch(prompt, a, b)
        with few_threads(self.device.type == "cpu"):
            return PairDeltas(*self._deltas_chunked(p, a, b))

    def _pair_deltas(self, prompt: Any, a: torch.Tensor | None, b: torch.Tensor | None) -> PairDeltas:
        if isinstance(prompt, PairDeltas):
            return prompt
        if a is None or b is None:
            raise TypeError("pass prompt, a and b embeddings, or a PairDeltas as prompt")
        return self.pair_deltas(prompt, a, b)

    @torch.no_grad()
    def pair_moments(
        self, post: Posterior, prompt: Any, a: torch.Tensor | None = None, b: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the logit r(a) − r(b) under the posterior, two (n,) tensors."""
        d = self._pair_deltas(prompt, a, b)
        m, s2 = logit_moments(post, d.db, d.dg, self.link)
        t = self.config.temperature
        return (m, s2) if t == 1.0 else (m / t, s2 / (t * t))

    def predict_proba(
        self, post: Posterior, prompt: Any, a: torch.Tensor | None = None, b: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """p(a ≻ b) for n pairs and its posterior std (delta method), two (n,) tensors."""
        with few_threads(self.device.type == "cpu"):
            m, s2 = self.pair_moments(post, prompt, a, b)
            p = probit_proba(m, s2)
            sig = torch.sigmoid(m)
            return p, sig * (1 - sig) * s2.sqrt()

    @torch.no_grad()
    def predict_proba_samples(
        self,
        post: Posterior,
        prompt: Any,
        a: torch.Tensor | None = None,
        b: torch.Tensor | None = None,
        n_samples: int = 64,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """p(a ≻ b) under n_samples draws of θ from the posterior: (S, n)."""
        with few_threads(self.device.type == "cpu"):
            d = self._pair_deltas(prompt, a, b)
            theta = post.sample(n_samples, generator)
            return torch.sigmoid((d.db.unsqueeze(0) + link_fn(self.link, theta) @ d.dg.T) / self.config.temperature)

    def info_gain(
        self, post: Posterior, prompt: Any, a: torch.Tensor | None = None, b: torch.Tensor | None = None
    ) -> torch.Tensor:
        """BALD: mutual information (bits) between the label of each pair and the user's latent, (n,)."""
        with few_threads(self.device.type == "cpu"):
            m, s2 = self.pair_moments(post, prompt, a, b)
            return bald(m, s2)

    def entropy(
        self, post: Posterior, prompt: Any, a: torch.Tensor | None = None, b: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Total predictive entropy (bits) of each pair's label, (n,)."""
        with few_threads(self.device.type == "cpu"):
            m, s2 = self.pair_moments(post, prompt, a, b)
            return binary_entropy(probit_proba(m, s2))

    @torch.no_grad()
    def reward(
        self, post: Posterior, prompt: torch.Tensor, response: torch.Tensor, scaled: bool | None = None
    ) -> torch.Tensor:
        """Reward of n responses for the user at the posterior mean, (n,).

        ``scaled`` (default: config.reward_scaling) returns VPL's scaled reward instead: the expected
        probability of beating the stored reference responses under the same prompt, in [0, 1].
        """
        p, r = self._batch(prompt, response)
        w = link_fn(self.link, post.mean.to(self.device))
        raw = self._reward_raw(p, r, w)
        scaled = self.config.reward_scaling if scaled is None else scaled
        if not scaled or self.reference_response.shape[0] == 0:
            return raw.float().cpu()
        refs = self.reference_response
        n, k = p.shape[0], refs.shape[0]
        pp = p.unsqueeze(1).expand(n, k, -1).reshape(n * k, -1)
        ref_raw = self._reward_raw(pp, refs.repeat(n, 1), w).reshape(n, k)
        return torch.sigmoid(raw.unsqueeze(1) - ref_raw).mean(1).float().cpu()

    def _reward_raw(self, p: torch.Tensor, r: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Reward (n,) at weights w = link(θ), blended with the population and tempered like predictions,
        so that σ(r(a) − r(b)) is the prediction at the posterior mean."""
        base, g = self.basis(self.trunk(p, r))
        raw = base + g @ w + self.reward_offset(w)
        if self.population is not None:
            lam = self.config.personal_weight
            pop_base, _ = self.population.basis(self.population.trunk(p, r))
            raw = lam * raw + (1.0 - lam) * pop_base
        return raw / self.config.temperature

    # ---- fitting seen users ------------------------------------------------------------------------
    def _padded_labels(self, user: torch.Tensor, prompt: torch.Tensor, chosen: torch.Tensor,
                       rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every training user's label deltas in rows: Δb (U, P), Δg (U, P, L) and a mask (U, P)."""
        n_users, latent = len(self.user_ids), self.latent_dim
        db, dg = self._deltas_chunked(prompt, chosen, rejected)
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
    def refit_seen_posteriors(self, user: torch.Tensor, prompt: torch.Tensor, chosen: torch.Tensor,
                              rejected: torch.Tensor, profile_feats: torch.Tensor | None,
                              has_profile: torch.Tensor) -> None:
        """Seen users' posteriors again under the CURRENT prior (no empirical-Bayes step): after the guard
        changed the prior's scale, the mixture choice or the population blend."""
        if self.latent_dim == 0:
            return
        was_training = self.training
        self.eval()
        n_users, latent = len(self.user_ids), self.latent_dim
        pad_db, pad_dg, mask = self._padded_labels(user, prompt, chosen, rejected)
        feats = profile_feats if self.prior_net is not None else None
        has = has_profile.cpu() & torch.tensor(self.prior_net is not None)
        active = mask.sum(1) > 0
        if self.has_mixture:
            log_w = self._mixture_user_log_weights(n_users, feats, has)
            mean, cov = self._mixture_batch_posterior(pad_db, pad_dg, mask, log_w)
        else:
            mu = self.prior_mean(feats).float().cpu().expand(n_users, latent)
            no_prof = self.prior_mean(self.profile_features([None]) if self.prior_net is not None else None)
            mu0 = torch.where(has.unsqueeze(1), mu, no_prof.float().cpu().expand(n_users, latent))
            var = torch.where(has.unsqueeze(1), self.prior_var_profile.cpu(), self.prior_var_population.cpu())
            mean, cov = self._laplace_chunked(pad_db, pad_dg, mask, mu0, torch.diag_embed(var), mu0.clone())
        keep = active.unsqueeze(1)
        self.user_mean = torch.where(keep, mean, self.user_mean.cpu()).to(self.user_mean.device)
        self.user_cov = torch.where(keep.unsqueeze(2), cov, self.user_cov.cpu()).to(self.user_cov.device)
        self.train(was_training)

    @torch.no_grad()
    def fit_user_posteriors(
        self,
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
        n_users, latent = len(self.user_ids), self.latent_dim
        self.user_n = torch.bincount(user.cpu(), minlength=n_users).to(self.user_n.device)
        if latent == 0:
            return
        was_training = self.training
        self.eval()
        db, dg = self._deltas_chunked(prompt, chosen, rejected)
        order = torch.argsort(user.cpu(), stable=True)
        counts = torch.bincount(user.cpu(), minlength=n_users)
        width = max(int(counts.max()), 1)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(order)) - starts[user.cpu()[order]]
        pad_db = torch.zeros(n_users, width)
        pad_dg = torch.zeros(n_users, width, latent)
        mask = torch.zeros(n_users, width)
        uo = user.cpu()[order]
        pad_db[uo, slot] = db[order]
        pad_dg[uo, slot] = dg[order]
        mask[uo, slot] = 1.0
        feats = profile_feats if self.prior_net is not None else None
        mu0 = self.prior_mean(feats).float().cpu().expand(n_users, latent).clone()
        no_prof = self.prior_mean(self.profile_features([None]) if self.prior_net is not None else None)
        mu_pop = no_prof.float().cpu().expand(n_users, latent)
        if has_profile is None:
            has_profile = torch.ones(n_users, dtype=torch.bool)
        has_profile = has_profile.cpu() & torch.tensor(self.prior_net is not None)
        mean = init.float().cpu() if init is not None else mu0.clone()
        cov = torch.zeros(n_users, latent, latent)
        for _ in range(max(em_rounds, 1)):
            var = torch.where(has_profile.unsqueeze(1), self.prior_var_profile.cpu(), self.prior_var_population.cpu())
            mean, cov = self._laplace_chunked(pad_db, pad_dg, mask, mu0, torch.diag_embed(var), mean)
            # Empirical Bayes (one EM step): prior variance = spread of user posteriors around the prior mean.
            post_var = cov.diagonal(dim1=-2, dim2=-1)
            active = counts > 0
            if int(active.sum()) >= 2:
                pv = ((mean - mu0) ** 2 + post_var)[active & has_profile]
                if pv.shape[0] >= 2:
                    self.prior_var_profile = pv.mean(0).clamp_min(1e-3).to(self.prior_var_profile.device)
                pv = ((mean - mu_pop) ** 2 + post_var)[active]
                self.prior_var_population = pv.mean(0).clamp_min(1e-3).to(self.prior_var_population.device)
        if feats is not None:
            cv_var = self._cv_profile_var(feats.float().cpu(), mean, cov.diagonal(dim1=-2, dim2=-1),
                                          counts > 0, has_profile)
            if cv_var is not None:
                # The prior net was trained on these very users, so their spread around its predictions
                # understates a NEW user's: the profile prior's variance comes from out-of-fold
                # predictions instead, and the seen users' posteriors are refitted under it.
                self.prior_var_profile = torch.maximum(self.prior_var_profile.cpu(), cv_var).to(
                    self.prior_var_profile.device)
                var = torch.where(has_profile.unsqueeze(1), self.prior_var_profile.cpu(),
                                  self.prior_var_population.cpu())
                mean, cov = self._laplace_chunked(pad_db, pad_dg, mask, mu0, torch.diag_embed(var), mean)
        self.user_mean = mean.to(self.user_mean.device)
        self.user_cov = cov.to(self.user_cov.device)
        if mixture and self.config.mixture_max_k >= 2:
            self._fit_mixture(counts > 0, profile_feats, has_profile)
            if self.has_mixture:
                var = torch.where(has_profile.unsqueeze(1), self.prior_var_profile.cpu(),
                                  self.prior_var_population.cpu())
                settings = [(mu0, var, self._mixture_user_log_weights(n_users, feats, has_profile))]
                if bool(has_profile.any()):  # the same users with their profiles hidden
                    settings.append((mu_pop.clone(), self.prior_var_population.cpu().expand(n_users, latent),
                                     self._mixture_user_log_weights(n_users, feats,
                                                                    torch.zeros_like(has_profile))))
                if self._mixture_predicts_better(pad_db, pad_dg, mask, settings):
                    self._refit_under_mixture(pad_db, pad_dg, mask, counts > 0, profile_feats, has_profile)
                else:
                    self.mix_log_weights = torch.zeros(0, device=self.user_mean.device)
        self.train(was_training)

    def _fit_mixture(self, active: torch.Tensor, profile_feats: torch.Tensor | None,
                     has_profile: torch.Tensor, steps: int = 500, l2: float = 1e-3) -> None:
        """Empirical Bayes for a mixture-of-types prior over θ (mixture.py) from the seen users'
        posteriors, and a softmax regression from profiles to its weights. BIC keeps one Gaussian
        (and this model's single-Gaussian prior) when the users do not cluster."""
        from .mixture import fit_tied_gmm

        self.mix_log_weights = torch.zeros(0, device=self.user_mean.device)
        rows = torch.nonzero(active).squeeze(1)
        if rows.numel() < 6:
            return
        fit = fit_tied_gmm(self.user_mean[rows].float().cpu(), self.user_cov[rows].float().cpu(),
                           max_k=self.config.mixture_max_k)
        if fit.k < 2:
            return
        dev = self.user_mean.device
        self.mix_means = fit.means.to(dev)
        self.mix_cov = fit.cov.to(dev)
        weights = torch.zeros(self.config.profile_dim, fit.k)
        if self.profile_encoder is not None and profile_feats is not None and self.config.profile_dim > 0:
            # Soft targets: each user's responsibilities, once with their profile (when they have one)
            # and once with the missing-profile row, so an absent profile gets population-like weights.
            feats = profile_feats.float().cpu()[rows]
            missing = self.profile_features([None]).float().cpu().expand(rows.numel(), -1)
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
        self.mix_log_weights = base.to(dev)
        self.mix_profile_w = weights.to(dev)

    def _mixture_user_log_weights(self, n_users: int, profile_feats: torch.Tensor | None,
                                  has_profile: torch.Tensor) -> torch.Tensor:
        """log π_k for every training user (U, K), from their profile or the missing-profile row."""
        k = self.mix_log_weights.shape[0]
        if profile_feats is not None and self.mix_profile_w.numel() > 0:
            missing = self.profile_features([None]).float().cpu().expand(n_users, -1)
            feats = torch.where(has_profile.cpu().unsqueeze(1), profile_feats.float().cpu(), missing)
            return torch.log_softmax(self.mix_log_weights.float().cpu() + feats @ self.mix_profile_w.float().cpu(), -1)
        return torch.log_softmax(self.mix_log_weights.float().cpu(), -1).expand(n_users, k)

    def _mixture_batch_posterior(self, pad_db: torch.Tensor, pad_dg: torch.Tensor, mask: torch.Tensor,
                                 log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Collapsed posteriors of U users under the fitted mixture prior from padded labels (mask =
        which labels count): (U, L), (U, L, L)."""
        from .mixture import collapse

        n_users, k, latent = pad_db.shape[0], self.mix_log_weights.shape[0], self.latent_dim
        means = self.mix_means.float().cpu().expand(n_users, k, latent)
        covs = self.mix_cov.float().cpu().expand(n_users, k, latent, latent)
        return collapse(*self._component_posteriors(pad_db, pad_dg, mask, log_w, means, covs))

    def _predictive_score(self, pad_db: torch.Tensor, pad_dg: torch.Tensor, mean: torch.Tensor,
                          cov: torch.Tensor, mask: torch.Tensor) -> float:
        """Σ log p(label) over the masked labels under each user's Gaussian (probit predictive)."""
        logits = pad_db + torch.einsum("upl,ul->up", pad_dg, link_fn(self.link, mean))
        psi = torch.einsum("upl,ulk->upk", pad_dg, link_jacobian(self.link, mean))
        s2 = torch.einsum("upk,ukl,upl->up", psi, cov, psi).clamp_min(0)
        logp = torch.nn.functional.logsigmoid(logits / torch.sqrt(1.0 + math.pi / 8.0 * s2))
        return float((logp * mask).sum())

    def _mixture_predicts_better(self, pad_db: torch.Tensor, pad_dg: torch.Tensor, mask: torch.Tensor,
                                 priors: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                                 contexts: Sequence[int] = (0, 2, 5, 10)) -> bool:
        """Does the mixture prior predict the seen users' labels better than the single Gaussian prior,
        in the new-user setting it is for? For each context size n: every user's first n labels give a
        posterior under each prior, scored on the log-probability of that user's remaining labels.
        ``priors`` lists the settings to score, each as (Gaussian prior means (U, L), variances (U, L),
        mixture log weights (U, K)): with the users' profiles and with them hidden, since an annotator
        may skip the profile. The mixture is kept only if its total is higher: where the profile carries
        more than the type (it echoes a user's own weights, say), the Gaussian prior's profile network
        can be the better start."""
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
                g_mean, g_cov = self._laplace_chunked(pad_db, pad_dg, ctx, g_mu, cov0, g_mu)
                m_mean, m_cov = self._mixture_batch_posterior(pad_db, pad_dg, ctx, log_w)
                gauss += self._predictive_score(pad_db, pad_dg, g_mean, g_cov, target)
                mix += self._predictive_score(pad_db, pad_dg, m_mean, m_cov, target)
        self.info["prior_check"] = {"gaussian": round(gauss, 3), "mixture": round(mix, 3), "contexts": list(contexts),
                                    "settings": len(priors)}
        return mix > gauss

    def _refit_under_mixture(self, pad_db: torch.Tensor, pad_dg: torch.Tensor, mask: torch.Tensor,
                             active: torch.Tensor, profile_feats: torch.Tensor | None,
                             has_profile: torch.Tensor) -> None:
        """Seen users' posteriors again, now under the mixture prior; stored as their collapse."""
        log_w = self._mixture_user_log_weights(pad_db.shape[0], profile_feats, has_profile)
        mean, user_cov = self._mixture_batch_posterior(pad_db, pad_dg, mask, log_w)
        keep = active.cpu().unsqueeze(1)
        self.user_mean = torch.where(keep, mean, self.user_mean.cpu()).to(self.user_mean.device)
        self.user_cov = torch.where(keep.unsqueeze(2), user_cov, self.user_cov.cpu()).to(self.user_cov.device)

    def _cv_profile_var(
        self,
        feats: torch.Tensor,
        mean: torch.Tensor,
        post_var: torch.Tensor,
        active: torch.Tensor,
        has_profile: torch.Tensor,
        folds: int = 5,
        steps: int = 300,
    ) -> torch.Tensor | None:
        """Out-of-fold variance of users' latents around a profile → latent network like ``prior_net``
        (fresh weights per fold, fitted to the other folds' posterior means): what the profile prior
        leaves unexplained for a user it has not seen. None with too few users to split."""
        rows = torch.nonzero(active & has_profile).squeeze(1)
        if rows.numel() < 4 * folds or self.prior_net is None:
            return None
        x, y = feats[rows], mean[rows]
        gen = torch.Generator().manual_seed(0)
        fold = torch.randperm(rows.numel(), generator=gen) % folds
        pred = torch.zeros_like(y)
        width = self.config.profile_hidden
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

    def _laplace_chunked(self, db, dg, mask, mu0, cov0, init, chunk: int = 1024):
        means, covs = [], []
        for i in range(0, db.shape[0], chunk):
            m, c = laplace(
                db[i : i + chunk],
                dg[i : i + chunk],
                mask[i : i + chunk],
                mu0[i : i + chunk],
                cov0[i : i + chunk],
                self.link,
                iters=self.config.laplace_iters,
                init=init[i : i + chunk],
            )
            means.append(m)
            covs.append(c)
        return torch.cat(means), torch.cat(covs)

    def set_reference(self, prompt: torch.Tensor, response: torch.Tensor, seed: int = 0) -> None:
        k = min(self.config.n_reference, response.shape[0])
        idx = torch.randperm(response.shape[0], generator=torch.Generator().manual_seed(seed))[:k]
        self.reference_prompt = prompt[idx].float().to(self.device).clone()
        self.reference_response = response[idx].float().to(self.device).clone()

    def active_units(self, threshold: float = 0.01) -> int:
        """Latent units whose posterior mean varies across seen users (Burda et al. 2016's activity)."""
        if self.latent_dim == 0 or self.user_mean.shape[0] < 2:
            return 0
        return int((self.user_mean.var(0) > threshold).sum())

    # ---- standalone export --------------------------------------------------------------------------
    def export_head(self) -> dict[str, torch.Tensor]:
        """The head as plain tensors for standalone.py: f = proj(h) (optional), base = f·base_w + base_b
        + sqnorm·‖f‖², basis = f @ basis_w.T + basis_b, reward = base + w·basis + offset(w)."""
        raise NotImplementedError

    def save(self, path: str) -> None:
        from ..artifacts import save_model

        save_model(self, path)


def population_config(config: ModelConfig) -> ModelConfig:
    """The config of the population BT that rides along with a personal model of ``config``."""
    return ModelConfig(kind="bt", dim=config.dim, hidden=list(config.hidden), features=config.features,
                       dropout=config.dropout, latent_dim=0, n_reference=0)


def _stack_context(context: Context | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    if context is None:
        return None
    if isinstance(context, tuple) and len(context) == 3 and isinstance(context[0], torch.Tensor):
        if context[0].dim() == 2:
            if context[0].shape[0] == 0:
                return None
            return context[0].float(), context[1].float(), context[2].float()
        return context[0].reshape(1, -1).float(), context[1].reshape(1, -1).float(), context[2].reshape(1, -1).float()
    items = list(context)
    if not items:
        return None
    ps, cs, rs = zip(*items, strict=True)
    return (
        torch.stack([p.reshape(-1) for p in ps]).float(),
        torch.stack([c.reshape(-1) for c in cs]).float(),
        torch.stack([r.reshape(-1) for r in rs]).float(),
    )
