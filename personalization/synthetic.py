"""Synthetic pluralistic populations with known ground truth (offline, fast, reusable by simulators).

The ONE population model of the project: the tensor benchmarks (``benchmarks/personalization_*.py``), the
app's simulation protocol (``benchmarks/simulation_protocol.py``) and the demo's simulated annotators
(``manage.py seed_demo_labels``) all draw their people here.

A response has visible attributes x ∈ R^A (think length, formality, humour, safety …). User u has true
reward weights w_u = w_type(u) + individual noise, and labels a pair with Bradley–Terry noise:
p(a ≻ b) = σ(scale · w_u·(x_a − x_b)). Embeddings are synthetic unit vectors that encode the prompt
topic, the attributes (linearly) and nuisance content, plus noise, so models see "text embeddings"
without a text encoder. Profiles (PRISM-style fields) correlate with the user's type; their
stated-preference sliders can echo the user's own weights (``slider_signal``, through
``personalization.profiles.STATED_PREF_ATTRIBUTES``, the mapping the dashboard reads them back with).

    pop = Population(PRESETS["pets"]())
    users = pop.draw_users(100)
    pairs = pop.sample_pairs(50)
    a_wins = pop.label(users[0], pairs)            # bool (n,)
    pop.bayes_optimal_accuracy([users[0]], pairs)  # what knowing w_u exactly would reach

Named types over named attributes (the text attributes of ``personalization.synthetic_text``):

    pop = Population.of_types([UserType("short", {"length": -2.0}, 0.3, {"gender": "male"}), ...],
                              ("length", "caution", "humor", "markdown"))
    users = pop.draw_users(10, random.Random(0), prefix="sim-")
    pop.prob(users[0], attribute_differences)      # numpy in, numpy out

Random draws come from the generator the caller passes, a ``torch.Generator`` or a ``random.Random``,
in the same order either way (``_Draws``), so each caller's seeded runs are what they were before the
two generators of the project became this one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from personalization.profiles import STATED_PREF_ATTRIBUTES, STATED_PREF_CODES

AGES = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
GENDERS = ["male", "female", "non-binary"]
COUNTRIES = ["US", "GB", "IN", "DE", "BR", "NG", "JP", "MX"]
SLIDERS = list(STATED_PREF_CODES)
# Demographic values a profile draws from when it does not take the type's typical value (in this order).
DEMOGRAPHICS: dict[str, list[str]] = {
    "age": AGES,
    "gender": GENDERS,
    "reside_country": COUNTRIES,
    "education": ["completed-secondary", "vocational", "some-university", "bachelors", "graduate"],
    "lm_frequency_use": ["every-day", "every-week", "every-month", "less-than-monthly"],
    "employment_status": ["full-time", "part-time", "student", "retired"],
}
PREFER_NOT = "prefer-not-to-say"

Generator = torch.Generator | random.Random


@dataclass
class UserType:
    """A named type: true reward weights by attribute name, its share, and its typical profile answers."""

    name: str
    weights: dict[str, float]  # attribute -> true reward weight (attributes are z-scored)
    share: float  # share of the population
    profile: dict[str, Any]  # typical demographics of the type (PRISM codes); "sliders": base slider values


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
    type_names: list[str] | None = None  # T names (None → type0 …)
    # Typical profile of each type (None → drawn from the seed: age, gender, country, base sliders).
    type_profiles: list[dict[str, Any]] | None = None
    stratified: bool = False  # type counts follow the shares exactly (largest remainder), else drawn
    slider_signal: float = 0.0  # stated-preference slider += slider_signal · sign · w[attribute]
    slider_noise: float = 15.0  # std of a slider around its type's base value


@dataclass
class SyntheticUser:
    id: str  # user id
    type: int  # index of the user's type
    weights: torch.Tensor  # (A,) true reward weights
    profile: dict[str, Any]  # PRISM-style profile fields
    type_name: str = ""  # name of the user's type


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


class _Draws:
    """The population's random draws from the caller's generator: a torch.Generator (float32 arithmetic,
    as the tensor benchmarks always had) or a random.Random (float64, as the app's simulation had)."""

    def __init__(self, generator: Generator):
        self.gen = generator
        self.is_torch = isinstance(generator, torch.Generator)
        self.dtype = torch.float32 if self.is_torch else torch.float64

    def uniform(self) -> float:
        if isinstance(self.gen, torch.Generator):
            return float(torch.rand(1, generator=self.gen))
        return self.gen.random()

    def uniforms(self, n: int) -> torch.Tensor:
        if isinstance(self.gen, torch.Generator):
            return torch.rand(n, generator=self.gen)
        return torch.tensor([self.gen.random() for _ in range(n)], dtype=torch.float64)

    def normals(self, n: int) -> torch.Tensor:
        if isinstance(self.gen, torch.Generator):
            return torch.randn(n, generator=self.gen)
        return torch.tensor([self.gen.gauss(0.0, 1.0) for _ in range(n)], dtype=torch.float64)

    def choice(self, values: Sequence[str]) -> str:
        if isinstance(self.gen, torch.Generator):
            return values[int(torch.randint(len(values), (1,), generator=self.gen))]
        return self.gen.choice(values)

    def categorical(self, probs: torch.Tensor, n: int) -> list[int]:
        if isinstance(self.gen, torch.Generator):
            return torch.multinomial(probs, n, replacement=True, generator=self.gen).tolist()
        return self.gen.choices(range(len(probs)), weights=probs.tolist(), k=n)

    def shuffle(self, items: list[int]) -> None:
        if isinstance(self.gen, torch.Generator):
            items[:] = [items[i] for i in torch.randperm(len(items), generator=self.gen).tolist()]
        else:
            self.gen.shuffle(items)


class Population:
    """User types, per-user true rewards, profiles correlated with type, pairs and BT-noisy labels."""

    def __init__(self, config: PopulationConfig):
        self.config = config
        self.type_weights = torch.tensor(config.type_weights, dtype=torch.float32)
        self._type_weights64 = torch.tensor(config.type_weights, dtype=torch.float64)
        self.n_types, self.n_attributes = self.type_weights.shape
        probs = config.type_probs or [1.0 / self.n_types] * self.n_types
        self.type_probs = torch.tensor(probs, dtype=torch.float32) / sum(probs)
        self.shares = np.asarray(probs, dtype=np.float64) / np.sum(np.asarray(probs, dtype=np.float64))
        self.attributes: tuple[str, ...] = tuple(config.attribute_names or
                                                 [f"attr{i}" for i in range(self.n_attributes)])
        self.name = config.name
        g = torch.Generator().manual_seed(config.seed)
        d = config.emb_dim
        self.topic_vecs = torch.randn(config.n_topics, d, generator=g) / math.sqrt(d)
        basis, _ = torch.linalg.qr(torch.randn(d, self.n_attributes + config.n_nuisance, generator=g))
        self.attr_dirs = basis[:, : self.n_attributes].T.contiguous()  # (A, d) orthonormal
        self.nuisance_dirs = basis[:, self.n_attributes :].T.contiguous()  # (N, d)
        # Attributes act differently under some topics: a topic-specific rotation of the attribute code.
        self.topic_mix = 0.1 * torch.randn(config.n_topics, self.n_attributes, self.n_attributes, generator=g)
        # Profile values typical of each type.
        if config.type_profiles is not None:
            self.type_profile = [dict(p) for p in config.type_profiles]
        else:
            self.type_profile = [
                {
                    "age": AGES[int(torch.randint(len(AGES), (1,), generator=g))],
                    "gender": GENDERS[t % len(GENDERS)],
                    "reside_country": COUNTRIES[int(torch.randint(len(COUNTRIES), (1,), generator=g))],
                    "sliders": (30 + 60 * torch.rand(len(SLIDERS), generator=g)).tolist(),
                }
                for t in range(self.n_types)
            ]
        names = config.type_names or [f"type{t}" for t in range(self.n_types)]
        self.types = [
            UserType(names[t], dict(zip(self.attributes, config.type_weights[t], strict=True)), float(self.shares[t]),
                     self.type_profile[t])
            for t in range(self.n_types)
        ]
        # Which slider echoes which attribute weight: (slider index, attribute index, sign).
        self._echo: list[tuple[int, int, float]] = []
        for i, code in enumerate(SLIDERS):
            attr, sign = STATED_PREF_ATTRIBUTES.get(code, ("", 0.0))
            if attr in self.attributes:
                self._echo.append((i, self.attributes.index(attr), sign))
        self._user_counter = 0

    @classmethod
    def of_types(
        cls,
        types: Sequence[UserType],
        attributes: Sequence[str],
        *,
        label_scale: float = 1.0,
        individual_std: float = 0.15,
        profile_signal: float = 0.8,
        slider_signal: float = 18.0,
        slider_noise: float = 12.0,
        name: str = "custom",
        seed: int = 0,
    ) -> Population:
        """Named types over named attributes: type counts follow the shares exactly, every profile answers
        every field its type has (none missing), sliders sit at 50 and echo the user's weights."""
        population = cls(PopulationConfig(
            name=name, type_weights=[[float(t.weights.get(a, 0.0)) for a in attributes] for t in types],
            type_probs=[t.share for t in types], attribute_names=list(attributes), individual_std=individual_std,
            label_scale=label_scale, profile_signal=profile_signal, profile_missing=0.0, seed=seed,
            type_names=[t.name for t in types], type_profiles=[t.profile for t in types], stratified=True,
            slider_signal=slider_signal, slider_noise=slider_noise,
        ))
        population.types = list(types)  # as given: the weights they name, their shares before normalising
        return population

    # ---- users --------------------------------------------------------------------------------------
    def stratified_types(self, n: int, generator: Generator) -> list[int]:
        """n type indices matching the shares as closely as possible (largest remainder), shuffled."""
        exact = self.shares * n
        counts = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
            counts[i] += 1
        types = [t for t, c in enumerate(counts) for _ in range(c)]
        _Draws(generator).shuffle(types)
        return types

    def draw_users(self, n: int, generator: Generator | None = None, prefix: str = "u") -> list[SyntheticUser]:
        gen = generator if generator is not None else torch.Generator().manual_seed(self.config.seed + 1)
        draws = _Draws(gen)
        types = self.stratified_types(n, gen) if self.config.stratified else draws.categorical(self.type_probs, n)
        type_weights = self.type_weights if draws.is_torch else self._type_weights64
        users = []
        for t in types:
            base = type_weights[t]
            noise = draws.normals(self.n_attributes) * self.config.individual_std * base.norm()
            weights = base + noise
            self._user_counter += 1
            users.append(SyntheticUser(f"{prefix}{self._user_counter}", t, weights, self._profile(t, weights, draws),
                                       self.types[t].name))
        return users

    def _profile(self, t: int, weights: torch.Tensor, draws: _Draws) -> dict[str, Any]:
        cfg = self.config
        typical = self.type_profile[t]
        prof: dict[str, Any] = {}
        for name, values in DEMOGRAPHICS.items():
            if name not in typical:
                continue
            if cfg.profile_missing > 0:  # the coin is drawn only where answers can be missing
                r = draws.uniform()
                if r < cfg.profile_missing:
                    if r < cfg.profile_missing / 2:
                        prof[name] = PREFER_NOT
                    continue
            prof[name] = typical[name] if draws.uniform() < cfg.profile_signal else draws.choice(values)
        if cfg.profile_missing > 0 and draws.uniform() < cfg.profile_missing:
            return prof
        base = torch.tensor(typical.get("sliders") or [50.0] * len(SLIDERS), dtype=draws.dtype)
        sliders = base + cfg.slider_noise * draws.normals(len(SLIDERS))
        if cfg.slider_signal:
            for i, j, sign in self._echo:
                sliders[i] = sliders[i] + cfg.slider_signal * sign * weights[j]
        vals = sliders.clamp(1, 100).round().int().tolist()
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
    def prob(self, user: SyntheticUser, pairs: Any) -> Any:
        """True p(a ≻ b) for the user, (n,): pairs with ``attrs_a``/``attrs_b`` (a PairBatch, the protocol's
        pair table) or (n, A) attribute differences. Tensors in, a tensor out; numpy in, numpy out."""
        diff = pairs.attrs_a - pairs.attrs_b if hasattr(pairs, "attrs_a") else pairs
        if isinstance(diff, torch.Tensor):
            return torch.sigmoid(self.config.label_scale * diff @ user.weights.to(diff.dtype))
        logit = self.config.label_scale * np.asarray(diff, dtype=np.float64) @ user.weights.double().numpy()
        return 1.0 / (1.0 + np.exp(-logit))

    def label(self, user: SyntheticUser, pairs: Any, generator: Generator | None = None) -> Any:
        """Bool (n,): True where the user prefers a (Bradley–Terry noise); the kind ``prob`` returns."""
        gen = generator if generator is not None else torch.Generator().manual_seed(self.config.seed + 3)
        p = self.prob(user, pairs)
        u = _Draws(gen).uniforms(len(p))
        return u < p if isinstance(p, torch.Tensor) else u.numpy() < p

    def bayes_optimal_accuracy(self, users: SyntheticUser | Sequence[SyntheticUser], pairs: Any) -> float:
        """Expected accuracy of the predictor that knows each user's true reward (pairs per user, or the
        same pairs for all; one user with their pairs also works)."""
        if isinstance(users, SyntheticUser):
            users, pairs = [users], [pairs]
        batches = list(pairs) if isinstance(pairs, list | tuple) else [pairs] * len(users)
        vals = [self.prob(u, b) for u, b in zip(users, batches, strict=True)]
        if not sum(len(p) for p in vals):
            return float("nan")
        if isinstance(vals[0], torch.Tensor):
            return float(torch.cat([torch.maximum(p, 1 - p) for p in vals]).mean())
        return float(np.concatenate([np.maximum(p, 1.0 - p) for p in vals]).mean())

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
