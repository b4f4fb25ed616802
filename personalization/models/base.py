"""The interface every reward model shares, and everything that only depends on it.

A model maps a (prompt, response) embedding pair to ``r = b(x) + link(θ)·g(x)``: a base reward ``b`` and
an L-dimensional basis ``g`` from a shared trunk, and a per-user latent θ (``Posterior``). Subclasses
define ``basis`` (and ``reward_offset`` when the reward has a user-only term) and their training loss;
inference — posteriors from context, one-label updates, predictions, BALD — lives here. Fitting the seen
users' posteriors and the prior after training (empirical Bayes, the mixture of types) is empirical_bayes.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
    laplace_chunked,
    link_fn,
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


# Trunk dropout per model kind when ModelConfig.dropout is None (chosen on the benchmark populations: 0.5
# helps BT and PAL — accuracy on the homogeneous set, calibration, new users — and costs VPL accuracy).
DEFAULT_DROPOUT = {"bt": 0.5, "pal": 0.5, "vpl": 0.2}


@dataclass(frozen=True)
class ModelConfig:
    """A model's architecture and inference settings. The defaults are the library's tuned ones (what
    ``fit`` trains with); ``fit`` fills in ``kind``, ``dim`` and ``profile_dim`` from its arguments and
    the data (``for_data``). Frozen: a changed setting is a new config (``dataclasses.replace``)."""

    kind: str = "bt"  # registry key: "bt" | "vpl" | "pal"
    dim: int = 384  # embedding width of prompts and responses
    hidden: list[int] = field(default_factory=lambda: [128])  # trunk layer widths
    features: str = "p_r_pr"  # blocks of concat[p, r, p*r] the trunk sees (features.FEATURE_KINDS)
    dropout: float | None = None  # trunk dropout during training; None = the kind's default (DEFAULT_DROPOUT).
    # Regularises the trunk on a few thousand pairs and calibrates it
    latent_dim: int = 8  # L: VPL latent size, PAL number of prototypes K (0 or less = 8); always 0 for BT
    profile_dim: int = 0  # width of profile feature vectors; 0 = no profile prior (always 0 for BT)
    profile_hidden: int = 16  # hidden width of the profile → prior-mean MLP (small: a wide one memorises the
    # training users' profiles, and the empirical-Bayes prior variance then understates how far new users fall)
    prior_std: float = 1.0  # initial std of the prior over θ (refitted by empirical Bayes after training)
    encoder_hidden: int = 128  # VPL: width of the pair encoder and attention pooling
    free_bits: float = 0.05  # VPL: KL floor per latent unit (nats) against posterior collapse
    reward_scaling: bool = False  # VPL: reward() returns the win-rate against reference responses by default
    vpl_likelihood: str = "probit"  # VPL: "probit" (z marginalised in closed form) | "sample" (ELBO, one z)
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

    def resolved(self) -> ModelConfig:
        """The settings that depend on the kind made concrete (idempotent; every model is built from
        one): the kind's dropout when None, no latent and no profile prior for BT, 8 latent units for
        VPL/PAL when none are asked for."""
        changes: dict[str, Any] = {}
        if self.dropout is None:
            changes["dropout"] = DEFAULT_DROPOUT.get(self.kind, 0.2)
        if self.kind == "bt":
            changes.update(latent_dim=0, profile_dim=0)
        elif self.latent_dim <= 0:
            changes["latent_dim"] = 8
        return replace(self, **changes) if changes else self

    def for_data(self, kind: str, dim: int, profile_dim: int) -> ModelConfig:
        """This config for a ``kind`` model on ``dim``-wide embeddings and ``profile_dim`` profile features."""
        return replace(self, kind=kind, dim=dim, profile_dim=profile_dim, hidden=list(self.hidden)).resolved()


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
        config = config.resolved()
        self.config = config
        self.user_ids: list[str] = list(user_ids)
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.profile_encoder = profile_encoder
        self.info: dict[str, Any] = {}  # training facts saved with the model (active units, fit time …)
        self.encoder_info: dict[str, Any] = {}  # the text encoder it was trained with (model_id, model_path)
        assert config.dropout is not None  # resolved() made it the kind's default
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
        self.config = replace(self.config, has_population=True, personal_weight=float(personal_weight))
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

    # ---- batched posteriors (fitting the seen users and the prior after training: empirical_bayes.py) --
    def _laplace_chunked(self, db: torch.Tensor, dg: torch.Tensor, mask: torch.Tensor, mu0: torch.Tensor,
                         cov0: torch.Tensor, init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched Laplace posteriors (posterior.laplace_chunked) with this model's link and iterations."""
        return laplace_chunked(db, dg, mask, mu0, cov0, self.link, iters=self.config.laplace_iters, init=init)

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
