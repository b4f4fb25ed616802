"""Synthetic pluralistic populations with known ground truth (offline, fast, reusable by simulators).

A response has visible attributes x ∈ R^A (think length, formality, humour, safety …). User u has true
reward weights w_u = w_type(u) + individual noise, and labels a pair with Bradley–Terry noise:
p(a ≻ b) = σ(scale · w_u·(x_a − x_b)). Embeddings are synthetic unit vectors that encode the prompt
topic, the attributes (linearly) and nuisance content, plus noise, so models see "text embeddings"
without a text encoder. Profiles (PRISM-style fields) correlate with the user's type.

    pop = Population(PRESETS["pets"]())
    users = pop.draw_users(100)
    pairs = pop.sample_pairs(50)
    a_wins = pop.label(users[0], pairs)            # bool (n,)
    pop.bayes_optimal_accuracy([users[0]], pairs)  # what knowing w_u exactly would reach
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

AGES = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
GENDERS = ["male", "female", "non-binary"]
COUNTRIES = ["US", "GB", "IN", "DE", "BR", "NG", "JP", "MX"]
SLIDERS = ["values", "creativity", "fluency", "factuality", "diversity", "safety", "personalisation", "helpfulness"]


@dataclass
class PopulationConfig:
    name: str = "custom"  # label used in reports
    type_weights: list[list[float]] = field(default_factory=lambda: [[2.0, 0.5], [-2.0, 0.5]])  # (T, A) rewards
    type_probs: list[float] | None = None  # share of each type (None → uniform)
    attribute_names: list[str] | None = None  # A names, for response_text (None → attr0 …)
    individual_std: float = 0.15  # std of a user's weights around their type's (relative to type norm)
    label_scale: float = 1.5  # BT inverse temperature on w·(x_a − x_b)
    emb_dim: int = 384  # width of the synthetic embeddings
    n_topics: int = 24  # prompt topics
    n_nuisance: int = 16  # latent nuisance factors of a response (content that no user cares about)
    attr_strength: float = 1.0  # how strongly attributes show in the embedding (vs topic/nuisance)
    emb_noise: float = 0.1  # isotropic embedding noise (relative)
    profile_signal: float = 0.7  # probability a categorical profile field takes the type's value
    profile_missing: float = 0.1  # probability a profile field is missing / prefer-not-to-say
    seed: int = 0  # seed of the population's structure (types, projections)


@dataclass
class SyntheticUser:
    id: str  # user id
    type: int  # index of the user's type
    weights: torch.Tensor  # (A,) true reward weights
    profile: dict[str, Any]  # PRISM-style profile fields


@dataclass
class PairBatch:
    topic: torch.Tensor  # (n,) prompt topic index
    attrs_a: torch.Tensor  # (n, A) attributes of response a
    attrs_b: torch.Tensor  # (n, A) attributes of response b
    prompt: torch.Tensor  # (n, d) prompt embeddings
    a: torch.Tensor  # (n, d) embeddings of response a
    b: torch.Tensor  # (n, d) embeddings of response b

    def __len__(self) -> int:
        return int(self.topic.shape[0])

    def take(self, index: torch.Tensor | slice) -> PairBatch:
        return PairBatch(*(t[index] for t in (self.topic, self.attrs_a, self.attrs_b, self.prompt, self.a, self.b)))


class Population:
    """User types, per-user true rewards, profiles correlated with type, pairs and BT-noisy labels."""

    def __init__(self, config: PopulationConfig):
        self.config = config
        self.type_weights = torch.tensor(config.type_weights, dtype=torch.float32)
        self.n_types, self.n_attributes = self.type_weights.shape
        probs = config.type_probs or [1.0 / self.n_types] * self.n_types
        self.type_probs = torch.tensor(probs, dtype=torch.float32) / sum(probs)
        g = torch.Generator().manual_seed(config.seed)
        d = config.emb_dim
        self.topic_vecs = torch.randn(config.n_topics, d, generator=g) / math.sqrt(d)
        basis, _ = torch.linalg.qr(torch.randn(d, self.n_attributes + config.n_nuisance, generator=g))
        self.attr_dirs = basis[:, : self.n_attributes].T.contiguous()  # (A, d) orthonormal
        self.nuisance_dirs = basis[:, self.n_attributes :].T.contiguous()  # (N, d)
        # Attributes act differently under some topics: a topic-specific rotation of the attribute code.
        self.topic_mix = 0.1 * torch.randn(config.n_topics, self.n_attributes, self.n_attributes, generator=g)
        # Profile values typical of each type.
        self.type_profile = [
            {
                "age": AGES[int(torch.randint(len(AGES), (1,), generator=g))],
                "gender": GENDERS[t % len(GENDERS)],
                "reside_country": COUNTRIES[int(torch.randint(len(COUNTRIES), (1,), generator=g))],
                "sliders": (30 + 60 * torch.rand(len(SLIDERS), generator=g)).tolist(),
            }
            for t in range(self.n_types)
        ]
        self._user_counter = 0

    # ---- users --------------------------------------------------------------------------------------
    def draw_users(self, n: int, generator: torch.Generator | None = None, prefix: str = "u") -> list[SyntheticUser]:
        g = generator or torch.Generator().manual_seed(self.config.seed + 1)
        types = torch.multinomial(self.type_probs, n, replacement=True, generator=g)
        users = []
        for t in types.tolist():
            base = self.type_weights[t]
            noise = torch.randn(self.n_attributes, generator=g) * self.config.individual_std * base.norm()
            self._user_counter += 1
            users.append(
                SyntheticUser(f"{prefix}{self._user_counter}", t, base + noise, self._profile(t, g))
            )
        return users

    def _profile(self, t: int, g: torch.Generator) -> dict[str, Any]:
        cfg = self.config
        typical = self.type_profile[t]
        prof: dict[str, Any] = {}
        choices = {"age": AGES, "gender": GENDERS, "reside_country": COUNTRIES}
        for name, values in choices.items():
            r = float(torch.rand(1, generator=g))
            if r < cfg.profile_missing:
                if r < cfg.profile_missing / 2:
                    prof[name] = "prefer-not-to-say"
                continue
            if float(torch.rand(1, generator=g)) < cfg.profile_signal:
                prof[name] = typical[name]
            else:
                prof[name] = values[int(torch.randint(len(values), (1,), generator=g))]
        if float(torch.rand(1, generator=g)) >= cfg.profile_missing:
            noise = 15 * torch.randn(len(SLIDERS), generator=g)
            vals = (torch.tensor(typical["sliders"]) + noise).clamp(1, 100).round().int().tolist()
            prof["stated_prefs"] = dict(zip(SLIDERS, vals, strict=True))
        return prof

    # ---- pairs --------------------------------------------------------------------------------------
    def embed_prompts(self, topic: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        d = self.config.emb_dim
        p = self.topic_vecs[topic] + 0.3 * torch.randn(topic.shape[0], d, generator=g) / math.sqrt(d)
        return torch.nn.functional.normalize(p, dim=-1)

    def embed_responses(self, topic: torch.Tensor, attrs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.config
        n, d = attrs.shape[0], cfg.emb_dim
        code = attrs + torch.einsum("nij,nj->ni", self.topic_mix[topic], attrs)
        nuisance = torch.randn(n, cfg.n_nuisance, generator=g)
        scale = 1.0 / math.sqrt(self.n_attributes + cfg.n_nuisance)
        e = (
            self.topic_vecs[topic] * math.sqrt(d) * 0.5 * scale
            + cfg.attr_strength * scale * code @ self.attr_dirs
            + scale * nuisance @ self.nuisance_dirs
            + cfg.emb_noise * scale * torch.randn(n, d, generator=g)
        )
        return torch.nn.functional.normalize(e, dim=-1)

    def sample_pairs(self, n: int, generator: torch.Generator | None = None) -> PairBatch:
        g = generator or torch.Generator().manual_seed(self.config.seed + 2)
        topic = torch.randint(self.config.n_topics, (n,), generator=g)
        xa = torch.randn(n, self.n_attributes, generator=g)
        xb = torch.randn(n, self.n_attributes, generator=g)
        return PairBatch(topic, xa, xb, self.embed_prompts(topic, g), self.embed_responses(topic, xa, g),
                         self.embed_responses(topic, xb, g))

    # ---- labels and ground truth -----------------------------------------------------------------------
    def prob(self, user: SyntheticUser, pairs: PairBatch) -> torch.Tensor:
        """True p(a ≻ b) for the user, (n,)."""
        return torch.sigmoid(self.config.label_scale * (pairs.attrs_a - pairs.attrs_b) @ user.weights)

    def label(self, user: SyntheticUser, pairs: PairBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool (n,): True where the user prefers a (Bradley–Terry noise)."""
        g = generator or torch.Generator().manual_seed(self.config.seed + 3)
        return torch.rand(len(pairs), generator=g) < self.prob(user, pairs)

    def bayes_optimal_accuracy(self, users: Sequence[SyntheticUser], pairs: Sequence[PairBatch] | PairBatch) -> float:
        """Expected accuracy of the predictor that knows each user's true reward (pairs per user)."""
        batches = [pairs] * len(users) if isinstance(pairs, PairBatch) else list(pairs)
        vals = [torch.maximum(p := self.prob(u, b), 1 - p) for u, b in zip(users, batches, strict=True)]
        return float(torch.cat(vals).mean())

    def response_text(self, attrs: torch.Tensor, topic: int = 0) -> str:
        """A readable stand-in text for a response (for simulators that need strings)."""
        names = self.config.attribute_names or [f"attr{i}" for i in range(self.n_attributes)]
        parts = [f"{'more' if v > 0 else 'less'} {n} ({v:+.1f})" for n, v in zip(names, attrs.tolist(), strict=True)]
        return f"[topic {topic}] A response that is " + ", ".join(parts) + "."


def labelled(pairs: PairBatch, a_wins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt, chosen, rejected) embeddings from pairs and labels."""
    m = a_wins.unsqueeze(1)
    return pairs.prompt, torch.where(m, pairs.a, pairs.b), torch.where(m, pairs.b, pairs.a)


def pets(seed: int = 0) -> PopulationConfig:
    """Pets-like: two opposed types (dog vs cat people) who agree on a weaker shared attribute, so any
    single reward is capped near the shared attribute's accuracy."""
    return PopulationConfig(
        name="pets", type_weights=[[2.5, 0.6, 0.0, 0.0], [-2.5, 0.6, 0.0, 0.0]],
        attribute_names=["dog-vs-cat", "quality", "length", "formality"], seed=seed,
    )


def ufp(seed: int = 0) -> PopulationConfig:
    """UltraFeedback-P-like: four types, each caring mostly about one of four visible attributes."""
    names = ["helpfulness", "honesty", "instruction-following", "truthfulness", "length", "humour"]
    weights = [[0.3] * 4 + [0.0, 0.0] for _ in range(4)]
    for t in range(4):
        weights[t][t] += 2.5
    return PopulationConfig(name="ufp", type_weights=weights, attribute_names=names, seed=seed)


def homogeneous(seed: int = 0) -> PopulationConfig:
    """Everybody shares one reward (small individual noise): personalisation must not hurt here."""
    return PopulationConfig(
        name="homogeneous", type_weights=[[1.5, -1.0, 0.8, 0.0, 0.5, 0.0]], individual_std=0.05, seed=seed
    )


PRESETS: dict[str, Callable[..., PopulationConfig]] = {"pets": pets, "ufp": ufp, "homogeneous": homogeneous}
