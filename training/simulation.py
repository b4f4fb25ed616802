"""Simulated annotators with known tastes, run through the real services (GitHub issue 4, part 6).

A synthetic pluralistic population: K user types with true reward weights over VISIBLE response
attributes (length, caution, humour, markdown). Attributes come from ``Candidate.metadata`` when every
candidate of the study has them (the demo study does) and are otherwise measured from the text, so any
study works. A simulated user u labels a pair with Bradley–Terry noise:

    p(a ≻ b) = σ(scale · w_u · (x_a − x_b)),   w_u = w_type(u) + individual noise

and answers a PRISM-style profile whose demographics correlate with their type and whose
stated-preference sliders agree with their weights.

``run_simulation`` is the protocol behind ``manage.py simulate``: a warm-up population labels with the
random selector and a global model is trained (``model_version_request``); then NEW annotators join,
fill in their profile and label one pair at a time with the study's selector set to the strategy —
``annotator_join`` → ``profile_update`` → ``assignment_next`` → ``judgment_create`` (the judgment hook
updates their online posterior, eagerly) — and after n ∈ checkpoints labels the posterior under the
active model predicts FRESH held-out pairs of the study that nobody labels during the run.

Every strategy (and profile mode: annotators who fill in their profile or skip it) runs on the same
simulated people with the same label noise, starting from the same model version, so the curves are a
paired comparison. Each annotator's "model ceiling" (the best θ under the network for their true tastes)
is reported next to the Bayes-optimal accuracy: labels can bring the posterior up to it, on average not past.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from django.db import transaction
from django.test.utils import override_settings

from feedback.models import Annotator, Pair, Study, text_hash
from feedback.profile_schema import STATED_PREFS

ATTRIBUTES: tuple[str, ...] = ("length", "caution", "humor", "markdown")
STRATEGIES: tuple[str, ...] = ("random", "uncertainty", "info_gain", "mixed")
PROFILE_MODES: tuple[str, ...] = ("profile", "no_profile")
DEFAULT_CHECKPOINTS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)

# ---------------------------------------------------------------------------------------------------
# Visible attributes of a response
# ---------------------------------------------------------------------------------------------------
_LENGTH_CODES = {"short": 0.0, "medium": 1.0, "long": 2.0}
_HEDGES = re.compile(
    r"\b(might|may|perhaps|possibly|probably|consult|careful|caution|unsure|not sure|depends|risks?|"
    r"safety|professional|however|although|please check)\b",
    re.IGNORECASE,
)
_HUMOR = re.compile(r"(!|\bhaha\b|\blol\b|\bjoke\b|\bfun fact\b|[\U0001F600-\U0001F64F])", re.IGNORECASE)
_MARKDOWN = re.compile(r"(^\s*[-*+] |^\s*\d+\. |^#+ |\*\*|`)", re.MULTILINE)


def text_attributes(text: str) -> dict[str, float]:
    """Attributes measurable from any text (used when a study's candidates carry no metadata)."""
    return {
        "length": math.log1p(len(text)),
        "caution": float(len(_HEDGES.findall(text))),
        "humor": float(len(_HUMOR.findall(text))),
        "markdown": float(len(_MARKDOWN.findall(text))),
    }


def metadata_attribute(metadata: dict[str, Any], name: str) -> float | None:
    value = (metadata or {}).get(name)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if name == "length" and isinstance(value, str):
        return _LENGTH_CODES.get(value.strip().lower())
    return None


@dataclass
class PairTable:
    """Visible attributes of both responses of the study's pairs (z-scored over the study's candidates)."""

    pair_ids: np.ndarray  # (n,)
    attrs_a: np.ndarray  # (n, A)
    attrs_b: np.ndarray  # (n, A)
    sources: dict[str, str]  # attribute -> "metadata" | "text"

    def __len__(self) -> int:
        return len(self.pair_ids)

    @property
    def diff(self) -> np.ndarray:
        return self.attrs_a - self.attrs_b

    def take(self, index: np.ndarray | Sequence[int]) -> PairTable:
        index = np.asarray(index, dtype=np.int64)
        return PairTable(self.pair_ids[index], self.attrs_a[index], self.attrs_b[index], self.sources)

    def rows(self, pair_ids: Sequence[int]) -> np.ndarray:
        where = {int(p): i for i, p in enumerate(self.pair_ids)}
        return np.asarray([where[int(p)] for p in pair_ids], dtype=np.int64)


def study_pair_table(study: Study, attributes: Sequence[str] = ATTRIBUTES) -> PairTable:
    """Per attribute: metadata when every candidate of the study has it, else measured from the text."""
    from feedback.models import Candidate

    cands = list(Candidate.objects.filter(prompt__study=study).values_list("id", "text", "metadata"))
    if not cands:
        raise ValueError(f"study {study.pk} has no candidates")
    raw = np.zeros((len(cands), len(attributes)), dtype=np.float64)
    sources: dict[str, str] = {}
    measured = [text_attributes(text) for _, text, _ in cands]
    for j, name in enumerate(attributes):
        from_meta = [metadata_attribute(meta, name) for _, _, meta in cands]
        if all(v is not None for v in from_meta):
            raw[:, j] = np.asarray(from_meta, dtype=np.float64)
            sources[name] = "metadata"
        else:
            raw[:, j] = [m.get(name, 0.0) for m in measured]
            sources[name] = "text"
    std = raw.std(0)
    z = (raw - raw.mean(0)) / np.where(std > 1e-9, std, 1.0)
    index = {cid: i for i, (cid, _, _) in enumerate(cands)}
    pairs = list(Pair.objects.filter(study=study).order_by("id").values_list("id", "candidate_a_id", "candidate_b_id"))
    return PairTable(
        np.asarray([p[0] for p in pairs], dtype=np.int64),
        z[[index[p[1]] for p in pairs]],
        z[[index[p[2]] for p in pairs]],
        sources,
    )


# ---------------------------------------------------------------------------------------------------
# The population
# ---------------------------------------------------------------------------------------------------
# Stated-preference sliders (PRISM) that track an attribute weight: slider ≈ 50 + 18·sign·w.
SLIDER_OF_ATTRIBUTE: dict[str, list[tuple[str, float]]] = {
    "caution": [("safety", 1.0)],
    "humor": [("creativity", 1.0)],
    "length": [("helpfulness", -1.0), ("diversity", 1.0)],
    "markdown": [("fluency", 1.0)],
}


@dataclass
class UserType:
    name: str
    weights: dict[str, float]  # attribute -> true reward weight (attributes are z-scored)
    share: float  # share of the population
    profile: dict[str, Any]  # typical demographics of the type (PRISM codes)


@dataclass
class SimUser:
    id: str
    type: int
    type_name: str
    weights: np.ndarray  # (A,) true reward weights
    profile: dict[str, Any]  # PRISM-style profile answers


# Demographic values a profile draws from when it does not take the type's typical value.
_DEMOGRAPHICS: dict[str, list[str]] = {
    "age": ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"],
    "gender": ["male", "female", "non-binary"],
    "reside_country": ["US", "GB", "IN", "DE", "BR", "NG", "JP", "MX"],
    "education": ["completed-secondary", "vocational", "some-university", "bachelors", "graduate"],
    "lm_frequency_use": ["every-day", "every-week", "every-month", "less-than-monthly"],
    "employment_status": ["full-time", "part-time", "student", "retired"],
}


class Population:
    """User types, per-user true rewards, PRISM-style profiles correlated with type, BT-noisy labels."""

    def __init__(
        self,
        types: Sequence[UserType],
        attributes: Sequence[str] = ATTRIBUTES,
        *,
        label_scale: float = 1.0,
        individual_std: float = 0.15,
        profile_signal: float = 0.8,
        slider_signal: float = 18.0,
        slider_noise: float = 12.0,
        name: str = "custom",
    ):
        self.types = list(types)
        self.attributes = tuple(attributes)
        self.label_scale = label_scale
        self.individual_std = individual_std
        self.profile_signal = profile_signal  # chance a demographic answer is the type's typical value
        self.slider_signal = slider_signal  # stated-preference slider ≈ 50 + slider_signal · sign · w + noise
        self.slider_noise = slider_noise
        self.name = name
        self.type_weights = np.asarray([[t.weights.get(a, 0.0) for a in self.attributes] for t in self.types])
        shares = np.asarray([t.share for t in self.types], dtype=np.float64)
        self.shares = shares / shares.sum()
        self._counter = 0

    # ---- users ------------------------------------------------------------------------------------
    def stratified_types(self, n: int, rng: random.Random) -> list[int]:
        """n type indices matching the shares as closely as possible (largest remainder), shuffled."""
        exact = self.shares * n
        counts = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
            counts[i] += 1
        types = [t for t, c in enumerate(counts) for _ in range(c)]
        rng.shuffle(types)
        return types

    def draw_users(self, n: int, rng: random.Random, prefix: str = "sim") -> list[SimUser]:
        users = []
        for t in self.stratified_types(n, rng):
            base = self.type_weights[t]
            noise = np.asarray([rng.gauss(0.0, 1.0) for _ in self.attributes])
            weights = base + noise * self.individual_std * np.linalg.norm(base)
            self._counter += 1
            users.append(SimUser(f"{prefix}-{self._counter}", t, self.types[t].name, weights, self.profile(t, weights, rng)))
        return users

    def profile(self, t: int, weights: np.ndarray, rng: random.Random) -> dict[str, Any]:
        typical = self.types[t].profile
        prof: dict[str, Any] = {}
        for name, values in _DEMOGRAPHICS.items():
            if name not in typical:
                continue
            prof[name] = typical[name] if rng.random() < self.profile_signal else rng.choice(values)
        sliders = {code: 50.0 + rng.gauss(0.0, self.slider_noise) for code, _ in STATED_PREFS}
        for attr, w in zip(self.attributes, weights, strict=True):
            for code, sign in SLIDER_OF_ATTRIBUTE.get(attr, []):
                sliders[code] += self.slider_signal * sign * float(w)
        prof["stated_prefs"] = {k: int(min(100, max(1, round(v)))) for k, v in sliders.items()}
        return prof

    # ---- labels and ground truth --------------------------------------------------------------------
    def _diff(self, pairs: PairTable | np.ndarray) -> np.ndarray:
        return pairs.diff if isinstance(pairs, PairTable) else np.asarray(pairs, dtype=np.float64)

    def prob(self, user: SimUser, pairs: PairTable | np.ndarray) -> np.ndarray:
        """True p(a ≻ b) of the user for each pair (pairs: a PairTable or (n, A) attribute differences)."""
        logit = self.label_scale * self._diff(pairs) @ user.weights
        return 1.0 / (1.0 + np.exp(-logit))

    def label(self, user: SimUser, pairs: PairTable | np.ndarray, rng: random.Random) -> np.ndarray:
        """Bool (n,): True where the user picks a (Bradley–Terry noise)."""
        p = self.prob(user, pairs)
        return np.asarray([rng.random() < q for q in p], dtype=bool)

    def bayes_optimal_accuracy(self, user: SimUser, pairs: PairTable | np.ndarray) -> float:
        """Expected accuracy on the user's noisy labels of the predictor that knows their true reward."""
        p = self.prob(user, pairs)
        return float(np.maximum(p, 1.0 - p).mean()) if len(p) else float("nan")


def pluralistic(label_scale: float = 1.0) -> Population:
    """Four types who disagree: concise vs thorough on length, playful vs careful on humour and caution.

    Demographics are correlated with the type, not determined by it (half the answers are the type's
    typical value, the rest drawn at random), people of a type differ (individual spread 30% of the type's
    weight norm), and the stated-preference sliders are a weak, noisy echo of the true weights: the
    profile gets a new annotator part of the way, and only their labels can tell the rest.
    """
    types = [
        UserType("concise", {"length": -2.0, "markdown": -0.5, "caution": -0.5}, 0.35,
                 {"age": "25-34", "gender": "male", "reside_country": "US", "lm_frequency_use": "every-day",
                  "education": "bachelors", "employment_status": "full-time"}),
        UserType("thorough", {"length": 1.5, "markdown": 1.2, "caution": 0.5}, 0.30,
                 {"age": "45-54", "gender": "female", "reside_country": "DE", "lm_frequency_use": "every-week",
                  "education": "graduate", "employment_status": "full-time"}),
        UserType("playful", {"humor": 2.0, "caution": -1.0, "length": -0.3}, 0.20,
                 {"age": "18-24", "gender": "non-binary", "reside_country": "BR", "lm_frequency_use": "every-day",
                  "education": "some-university", "employment_status": "student"}),
        UserType("careful", {"caution": 2.0, "humor": -1.0, "markdown": 0.3}, 0.15,
                 {"age": "65+", "gender": "female", "reside_country": "GB", "lm_frequency_use": "less-than-monthly",
                  "education": "completed-secondary", "employment_status": "retired"}),
    ]
    return Population(types, label_scale=label_scale, individual_std=0.3, profile_signal=0.5, slider_signal=8.0,
                      slider_noise=15.0, name="pluralistic")


def opposite(label_scale: float = 1.5) -> Population:
    """Two types with opposite tastes on length; the short-answer type is the minority (30%)."""
    types = [
        UserType("long", {"length": 2.0}, 0.7, {"gender": "female", "age": "45-54"}),
        UserType("short", {"length": -2.0}, 0.3, {"gender": "male", "age": "18-24"}),
    ]
    return Population(types, label_scale=label_scale, name="opposite")


POPULATIONS: dict[str, Callable[..., Population]] = {"pluralistic": pluralistic, "opposite": opposite}


# ---------------------------------------------------------------------------------------------------
# A content source with controlled attributes (short texts: fast to embed)
# ---------------------------------------------------------------------------------------------------
TOPICS = [
    "brewing green tea", "training for a 5k", "keeping a budget", "sleeping better", "learning chess",
    "growing tomatoes", "baking sourdough", "commuting by train", "kayaking on rivers", "learning guitar",
    "writing a CV", "saving for retirement", "cooking rice", "learning Spanish", "cleaning a laptop",
    "caring for a cat", "walking a puppy", "planning a wedding", "fixing a bike puncture", "reading more books",
    "meditating daily", "starting a podcast", "painting a room", "buying a used car", "making coffee",
    "hiking in the rain", "negotiating a salary", "composting at home", "learning to swim", "drawing portraits",
    "packing for a trip", "hosting a dinner", "studying for exams", "running a meeting", "choosing a laptop",
    "repotting a plant", "writing a poem", "learning to code", "stretching after work", "decluttering a flat",
    "making pancakes", "planting a hedge", "birdwatching", "learning to juggle", "brewing kombucha",
    "ironing shirts", "sharpening knives", "camping with kids", "recording a song", "tidying email",
    "building a bookshelf", "learning to knit", "cycling to work", "feeding a sourdough starter", "making jam",
    "writing thank-you notes", "organising photos", "picking a running shoe", "fixing a squeaky door",
    "planning a garden",
]
_CORE = [
    "The key to {t} is consistency.",
    "Start small with {t} and build up step by step.",
    "Most people get comfortable with {t} within a few weeks.",
    "Keep notes on what works for you and adjust as you go.",
    "The common mistakes with {t} are rushing and skipping the basics.",
    "A short daily routine beats an occasional long session.",
]
_CAUTION = [
    "That said, results may vary.",
    "Please be careful, and check with someone experienced if you are unsure.",
    "I might be wrong here, so consult a professional before relying on this; safety first.",
]
_HUMOR_LINES = [
    "Fun fact: even the experts were beginners once!",
    "Haha, don't worry, nobody gets {t} right on day one!",
    "Joke time: {t} is like a cat, it ignores you until you bring snacks! 😄",
]


def synthetic_response(topic: str, length: int, caution: int, humor: int, markdown: int, variant: int = 0) -> str:
    n_core = (1, 3, 5)[length]
    core = [_CORE[(variant + i) % len(_CORE)].format(t=topic) for i in range(n_core)]
    lines = core + [_CAUTION[i].format(t=topic) for i in range(caution)]
    lines += [_HUMOR_LINES[i].format(t=topic) for i in range(humor)]
    if markdown:
        return f"**{topic.capitalize()}**\n" + "\n".join(f"- {s}" for s in lines)
    return " ".join(lines)


def synthetic_study_lines(n_prompts: int = 60, responses: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Import rows ("responses" format) whose responses carry their attributes as metadata."""
    rng = random.Random(seed)
    combos = [(ln, c, h, m) for ln in range(3) for c in range(4) for h in range(4) for m in range(2)]
    rows = []
    for i in range(n_prompts):
        topic = TOPICS[i % len(TOPICS)] + ("" if i < len(TOPICS) else f" (part {i // len(TOPICS) + 1})")
        chosen = rng.sample(combos, responses)
        resp = []
        for k, (ln, c, h, m) in enumerate(chosen):
            resp.append({
                "text": synthetic_response(topic, ln, c, h, m, variant=rng.randrange(len(_CORE))),
                "model": f"Sim-{k % 5 + 1}",
                "metadata": {"length": ("short", "medium", "long")[ln], "caution": c, "humor": h, "markdown": bool(m)},
            })
        rows.append({"prompt": f"Any advice on {topic}?", "responses": resp})
    return rows


# ---------------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------------
@dataclass
class SimulationConfig:
    annotators: int = 20  # new annotators per strategy (phase 2)
    labels: int = 30  # labels each new annotator gives
    strategies: tuple[str, ...] = ("info_gain",)
    seed: int = 0
    retrain_every: int = 0  # global retrain after every R phase-2 labels (0: never)
    eval_pairs: int = 200  # held-out pairs nobody labels during the run
    warmup_annotators: int = 24  # 0: reuse the study's active model
    warmup_labels: int = 30
    kind: str | None = None  # model kind of the global model (default: the study's)
    population: str = "pluralistic"
    label_scale: float | None = None  # None: the population preset's
    checkpoints: tuple[int, ...] = DEFAULT_CHECKPOINTS
    target_fraction: float = 0.9  # "labels to reach 90% of Bayes-optimal accuracy"
    # "profile": new annotators fill in their profile (prior from it); "no_profile": they skip it (population
    # prior). Each mode runs every strategy on the same simulated people.
    profile_modes: tuple[str, ...] = ("profile",)


@dataclass
class _Timer:
    selection_ms: list[float] = field(default_factory=list)
    judgment_ms: list[float] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


@contextlib.contextmanager
def _eager_tasks() -> Iterator[None]:
    """Run Celery tasks in-process: the judgment hook updates the posterior before the next request."""
    from celery import current_app

    before = current_app.conf.task_always_eager, current_app.conf.task_eager_propagates
    trace_log = logging.getLogger("celery.app.trace")  # one "Task … succeeded" line per label otherwise
    level = trace_log.level
    current_app.conf.task_always_eager = True
    current_app.conf.task_eager_propagates = True
    trace_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        current_app.conf.task_always_eager, current_app.conf.task_eager_propagates = before
        trace_log.setLevel(level)


@contextlib.contextmanager
def _study_settings(study: Study, **values: Any) -> Iterator[None]:
    before = {k: getattr(study, k) for k in values}
    Study.objects.filter(pk=study.pk).update(**values)
    for k, v in values.items():
        setattr(study, k, v)
    try:
        yield
    finally:
        Study.objects.filter(pk=study.pk).update(**before)
        for k, v in before.items():
            setattr(study, k, v)


@contextlib.contextmanager
def _held_out(pair_ids: Sequence[int], full: int) -> Iterator[None]:
    """Keep the evaluation pairs out of every selector: they look full (n_assigned at the overlap target)."""
    before = dict(Pair.objects.filter(id__in=pair_ids).values_list("id", "n_assigned"))
    Pair.objects.filter(id__in=pair_ids).update(n_assigned=full)
    try:
        yield
    finally:
        for value in sorted(set(before.values())):
            Pair.objects.filter(id__in=[i for i, v in before.items() if v == value]).update(n_assigned=value)


class _Evaluator:
    """Predictions of an annotator's posterior under the active model on the held-out pairs (batched)."""

    def __init__(self, study: Study, table: PairTable):
        from feedback.models import Prompt
        from training.embeddings import ensure_vectors, prompt_text

        self.study = study
        self.table = table
        rows = {
            r[0]: r
            for r in Pair.objects.filter(id__in=table.pair_ids.tolist()).values_list(
                "id", "prompt__context", "prompt__text", "candidate_a__text", "candidate_b__text"
            )
        }
        texts: dict[str, str] = {}
        keys = []
        for pid in table.pair_ids.tolist():
            _, ctx, ptext, a, b = rows[pid]
            pt = prompt_text(Prompt(context=ctx, text=ptext))
            texts.update({text_hash(pt): pt, text_hash(a): a, text_hash(b): b})
            keys.append((text_hash(pt), text_hash(a), text_hash(b)))
        vectors = ensure_vectors(texts)
        self.P, self.A, self.B = (torch.from_numpy(np.stack([vectors[k[c]] for k in keys])) for c in range(3))
        self._population: dict[int, np.ndarray] = {}

    def p_a(self, annotator: Annotator) -> np.ndarray:
        from training.selectors import active_version, annotator_posterior, load_version_model

        version = active_version(self.study.pk)
        if version is None:
            raise LookupError("the study has no active model to evaluate")
        model = load_version_model(version)
        post = annotator_posterior(annotator, version)
        return model.predict_proba(post, self.P, self.A, self.B)[0].numpy()

    def population_p_a(self) -> np.ndarray:
        from training.selectors import active_version, load_version_model

        version = active_version(self.study.pk)
        if version is None:
            raise LookupError("the study has no active model to evaluate")
        if version.pk not in self._population:
            model = load_version_model(version)
            self._population[version.pk] = model.predict_proba(model.prior(None), self.P, self.A, self.B)[0].numpy()
        return self._population[version.pk]


class _Ceiling:
    """The best this model can do for a user: the θ that fits their TRUE preference probabilities on every
    pair outside the held-out set (soft labels, near-flat prior), scored on the held-out pairs. Labels can
    bring a new annotator's posterior close to this but, on average, not past it (it is the likelihood-best
    θ, not the accuracy-best, so small excesses are possible); the gap to Bayes-optimal is the network's
    (its basis Δg cannot express every taste)."""

    def __init__(self, study: Study, version: Any, table: PairTable, eval_table: PairTable):
        from training.active_learning import pair_pool

        pool = pair_pool(study.pk, version)
        self.link = pool.link
        held = set(eval_table.pair_ids.tolist())
        train_rows = np.asarray([i for i, p in enumerate(table.pair_ids.tolist()) if p not in held], dtype=np.int64)
        self.train = table.take(train_rows)
        self.eval = eval_table
        tpos, tfound = pool.positions(self.train.pair_ids.tolist())
        epos, efound = pool.positions(eval_table.pair_ids.tolist())
        if len(tfound) != len(self.train) or len(efound) != len(eval_table):
            raise LookupError("some pairs are not embedded")
        self.db_t, self.dg_t = pool.db[torch.from_numpy(tpos)], pool.dg[torch.from_numpy(tpos)]
        self.db_e, self.dg_e = pool.db[torch.from_numpy(epos)], pool.dg[torch.from_numpy(epos)]

    def accuracy(self, pop: Population, user: SimUser) -> float:
        from personalization.models.posterior import laplace, link_fn

        latent = self.dg_t.shape[1]
        if latent == 0:
            theta = torch.zeros(0)
        else:
            p = torch.from_numpy(pop.prob(user, self.train)).float()
            db = torch.cat([self.db_t, -self.db_t]).unsqueeze(0)
            dg = torch.cat([self.dg_t, -self.dg_t]).unsqueeze(0)
            weight = torch.cat([p, 1 - p]).unsqueeze(0)  # soft labels: a won with prob p, b with 1 − p
            theta, _ = laplace(db, dg, weight, torch.zeros(1, latent), 100.0 * torch.eye(latent).unsqueeze(0),
                               self.link, iters=50)
            theta = theta[0]
        logit = self.db_e + (self.dg_e @ link_fn(self.link, theta) if latent else 0.0)
        p_true = pop.prob(user, self.eval)
        return float(np.where(logit.numpy() > 0, p_true, 1.0 - p_true).mean())


def _scores(p_model: np.ndarray, p_true: np.ndarray, sampled: np.ndarray) -> dict[str, float]:
    pred_a = p_model > 0.5
    return {
        "acc_expected": float(np.where(pred_a, p_true, 1.0 - p_true).mean()),  # vs the noisy label's expectation
        "agree_bayes": float((pred_a == (p_true > 0.5)).mean()),  # agreement with the Bayes-optimal choice
        "acc_sampled": float((pred_a == sampled).mean()),  # vs one sampled label per pair
    }


def _label_one(annotator: Annotator, user: SimUser, pop: Population, table: PairTable, rng: random.Random,
               timer: _Timer, key: str) -> bool:
    from feedback import services as fs

    t0 = time.perf_counter()
    assignment = fs.assignment_next(annotator=annotator, rng=rng)
    t1 = time.perf_counter()
    if assignment is None:
        return False
    pair = assignment.pair
    a_wins = bool(pop.label(user, table.take(table.rows([pair.pk])), rng)[0])
    fs.judgment_create(annotator=annotator, pair=pair, choice="a" if a_wins else "b", client_key=key,
                       time_ms=rng.randint(3000, 30000))
    t2 = time.perf_counter()
    timer.selection_ms.append(1000 * (t1 - t0))
    timer.judgment_ms.append(1000 * (t2 - t1))
    return True


def _join(study: Study, user: SimUser, tag: str, with_profile: bool = True) -> Annotator:
    from feedback import services as fs

    annotator, _ = fs.annotator_join(study=study, external_id=f"{tag}-{user.id}")
    fs.annotator_consent(annotator=annotator)
    if with_profile:
        allowed = set(study.profile_fields)
        fs.profile_update(annotator=annotator, data={k: v for k, v in user.profile.items() if k in allowed})
    # Fresh instance: the profile cached on the old one predates the update.
    return Annotator.objects.select_related("study", "profile").get(pk=annotator.pk)


def _activate(study: Study, version_pk: int) -> None:
    """Make this version the study's active one again (each strategy starts from the warm-up model)."""
    from training.models import ModelVersion

    with transaction.atomic():
        ModelVersion.objects.filter(study=study, status=ModelVersion.Status.ACTIVE).exclude(pk=version_pk).update(
            status=ModelVersion.Status.RETIRED
        )
        ModelVersion.objects.filter(pk=version_pk).update(status=ModelVersion.Status.ACTIVE)


def _retrain(study: Study, kind: str | None, log: Callable[[str], None]) -> None:
    from training.models import ModelVersion
    from training.selectors import active_version
    from training.services import model_version_request

    version = model_version_request(study=study, kind=kind)
    version.refresh_from_db()
    if version.status == ModelVersion.Status.FAILED:
        raise RuntimeError(f"global training failed: {version.error.splitlines()[0] if version.error else ''}")
    if active_version(study.pk) is None:
        raise RuntimeError(f"no active model after training (version {version.pk} is {version.status})")
    m = version.metrics or {}
    log(f"  model v{version.pk} ({version.kind}) {version.status}: n_train={m.get('n_train')} "
        f"held-out acc personalized={m.get('accuracy', float('nan')):.3f} "
        f"population={m.get('accuracy_population', float('nan')):.3f} fit={m.get('fit_seconds')}s "
        f"prior types={m.get('prior_types')}")


def labels_to_reach(curve: list[dict[str, Any]], target: float, key: str = "acc_expected") -> int | None:
    for point in curve:
        if point[key] >= target:
            return int(point["n"])
    return None


def run_simulation(study: Study, config: SimulationConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the protocol (see the module docstring); returns curves, Bayes-optimal accuracies and latencies."""
    from django.conf import settings

    from training.embeddings import embed_study
    from training.selectors import active_version

    unknown = set(config.strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}; choose from {STRATEGIES}")
    if not config.profile_modes or set(config.profile_modes) - set(PROFILE_MODES):
        raise ValueError(f"profile modes must be some of {PROFILE_MODES}, got {config.profile_modes}")
    preset = POPULATIONS[config.population]
    pop = preset() if config.label_scale is None else preset(label_scale=config.label_scale)
    rng = random.Random(config.seed)
    run_tag = uuid.uuid4().hex[:8]  # external ids unique across runs on the same study
    started = time.perf_counter()

    table = study_pair_table(study, pop.attributes)
    n_new = config.annotators * len(config.strategies)
    n_needed = config.eval_pairs + config.labels + 1
    if len(table) < n_needed:
        raise ValueError(f"study {study.pk} has {len(table)} pairs; needs at least {n_needed}")
    order = list(range(len(table)))
    rng.shuffle(order)
    eval_table = table.take(sorted(order[: config.eval_pairs]))
    log(f"study {study.pk} '{study.name}': {len(table)} pairs, {len(eval_table)} held out for evaluation; "
        f"attributes from " + ", ".join(f"{k}={v}" for k, v in table.sources.items()))
    t0 = time.perf_counter()
    n_embedded = embed_study(study.pk)
    log(f"embedded {n_embedded} new texts in {time.perf_counter() - t0:.1f}s")

    overlap = max(study.overlap_target, config.warmup_annotators + n_new + 1)
    quota = max(study.pairs_per_annotator, config.labels, config.warmup_labels)
    result: dict[str, Any] = {
        "study": study.pk,
        "population": pop.name,
        "types": [{"name": t.name, "share": float(s), "weights": t.weights} for t, s in zip(pop.types, pop.shares,
                                                                                             strict=True)],
        "attribute_sources": table.sources,
        "eval_pair_ids": eval_table.pair_ids.tolist(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
        "strategies": {},
    }
    # Retraining happens only where the protocol asks for it (warm-up, --retrain-every).
    no_auto_retrain = override_settings(
        CHORUS_RETRAIN_MIN_JUDGMENTS=10**9, CHORUS_RETRAIN_EVERY_JUDGMENTS=10**9, CHORUS_RETRAIN_EVERY_MINUTES=10**9
    )
    with _eager_tasks(), no_auto_retrain, _held_out(eval_table.pair_ids.tolist(), overlap), _study_settings(
        study, overlap_target=overlap, pairs_per_annotator=quota, status=Study.Status.ACTIVE
    ):
        kind = config.kind or study.model_kind
        if config.warmup_annotators:
            with _study_settings(study, selector="random"):
                log(f"warm-up: {config.warmup_annotators} annotators x {config.warmup_labels} labels (random)")
                timer = _Timer()
                for user in pop.draw_users(config.warmup_annotators, rng, prefix=f"warm{config.seed}"):
                    annotator = _join(study, user, f"sim-{run_tag}")
                    for i in range(config.warmup_labels):
                        if not _label_one(annotator, user, pop, table, rng, timer, f"w{i}"):
                            break
            _retrain(study, kind, log)
        elif active_version(study.pk) is None:
            raise ValueError("the study has no active model: run a warm-up (--warmup-annotators > 0)")
        evaluator = _Evaluator(study, eval_table)
        start_version = active_version(study.pk)
        assert start_version is not None
        ceiling = _Ceiling(study, start_version, table, eval_table)
        checkpoints = sorted({c for c in config.checkpoints if c <= config.labels} | {config.labels})
        # The same new annotators (true tastes, profiles, label noise) for every strategy and mode: a paired
        # comparison. Every run starts from the same model version (--retrain-every swaps it during a run).
        cohort_seed = rng.randrange(2**31)
        for mode in config.profile_modes:
            for strategy in config.strategies:
                key = strategy if mode == "profile" else f"{strategy}/{mode}"
                _activate(study, start_version.pk)
                cohort_rng = random.Random(cohort_seed)
                users = pop.draw_users(config.annotators, cohort_rng, prefix=f"new{config.seed}")
                label_rng = random.Random(cohort_seed + 1)
                timer = _Timer()
                per_user: list[dict[str, Any]] = []
                n_since_retrain = 0
                log(f"strategy {key}: {config.annotators} new annotators x {config.labels} labels")
                with _study_settings(study, selector=strategy):
                    for user in users:
                        annotator = _join(study, user, f"sim-{run_tag}-{mode}-{strategy}", mode == "profile")
                        p_true = pop.prob(user, eval_table)
                        sampled = np.asarray([label_rng.random() < q for q in p_true])
                        record: dict[str, Any] = {
                            "annotator": annotator.pk,
                            "type": user.type_name,
                            "bayes": pop.bayes_optimal_accuracy(user, eval_table),
                            "ceiling": ceiling.accuracy(pop, user),
                            "population": _scores(evaluator.population_p_a(), p_true, sampled),
                            "curve": {},
                        }
                        given = 0
                        for n in checkpoints:
                            while given < n:
                                if not _label_one(annotator, user, pop, table, label_rng, timer, f"l{given}"):
                                    break
                                given += 1
                                n_since_retrain += 1
                                if config.retrain_every and n_since_retrain >= config.retrain_every:
                                    n_since_retrain = 0
                                    _retrain(study, kind, log)
                            if given < n:
                                break
                            record["curve"][n] = _scores(evaluator.p_a(annotator), p_true, sampled)
                        per_user.append(record)
                summary = _summarise(per_user, checkpoints, config.target_fraction, timer)
                summary["profile"] = mode == "profile"
                summary["per_user"] = per_user
                result["strategies"][key] = summary
                log(format_curve(key, summary))
        _activate(study, start_version.pk)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["settings"] = {"eager": True, "encoder_device": settings.CHORUS_ENCODER_DEVICE}
    for key, summary in result["strategies"].items():
        mode = key.partition("/")[2]
        base_summary = result["strategies"].get("random" + (f"/{mode}" if mode else ""))
        base = base_summary["labels_to_target"] if base_summary else None
        mine = summary["labels_to_target"]
        summary["labels_vs_random"] = (mine / base) if (mine is not None and base) else None
    return result


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def _summarise(per_user: list[dict[str, Any]], checkpoints: Sequence[int], target_fraction: float,
               timer: _Timer) -> dict[str, Any]:
    bayes = _mean([u["bayes"] for u in per_user])
    curve = []
    for n in checkpoints:
        have = [u for u in per_user if n in u["curve"]]
        if not have:
            continue
        curve.append({"n": n, "annotators": len(have),
                      **{k: _mean([u["curve"][n][k] for u in have]) for k in ("acc_expected", "agree_bayes",
                                                                               "acc_sampled")}})
    population = {k: _mean([u["population"][k] for u in per_user]) for k in ("acc_expected", "agree_bayes",
                                                                                "acc_sampled")}
    by_type: dict[str, Any] = {}
    for name in sorted({u["type"] for u in per_user}):
        mine = [u for u in per_user if u["type"] == name]
        by_type[name] = {
            "annotators": len(mine),
            "bayes": _mean([u["bayes"] for u in mine]),
            "population": _mean([u["population"]["acc_expected"] for u in mine]),
            "curve": {n: _mean([u["curve"][n]["acc_expected"] for u in mine if n in u["curve"]])
                      for n in checkpoints if any(n in u["curve"] for u in mine)},
        }
    return {
        "bayes_optimal": bayes,
        "ceiling": _mean([u["ceiling"] for u in per_user if "ceiling" in u]),
        "target": target_fraction * bayes,
        "labels_to_target": labels_to_reach(curve, target_fraction * bayes),
        # Less ceiling-bound thresholds too: 90% of Bayes can sit close to what the model can express at all.
        "labels_to_fraction": {f"{f:.2f}": labels_to_reach(curve, f * bayes) for f in (0.8, 0.85, 0.9)},
        "population": population,
        "curve": curve,
        "by_type": by_type,
        "latency_ms": {
            "selection_p50": percentile(timer.selection_ms, 50),
            "selection_p95": percentile(timer.selection_ms, 95),
            "judgment_p50": percentile(timer.judgment_ms, 50),
            "judgment_p95": percentile(timer.judgment_ms, 95),
            "n": len(timer.judgment_ms),
        },
    }


def format_curve(strategy: str, summary: dict[str, Any]) -> str:
    bayes = summary["bayes_optimal"]
    lines = [
        f"learning curve — strategy {strategy} (Bayes-optimal accuracy {bayes:.3f}; "
        f"target {summary['target']:.3f} = 90%; population model {summary['population']['acc_expected']:.3f}; "
        f"model ceiling {summary['ceiling']:.3f})",
        f"{'labels':>6} {'acc (expected)':>14} {'agree w/ Bayes':>14} {'acc (sampled)':>13} {'% of Bayes':>10}",
    ]
    for p in summary["curve"]:
        lines.append(f"{p['n']:>6} {p['acc_expected']:>14.3f} {p['agree_bayes']:>14.3f} {p['acc_sampled']:>13.3f} "
                     f"{100 * p['acc_expected'] / bayes:>9.1f}%")
    reached = summary["labels_to_target"]
    lines.append(f"labels to reach 90% of Bayes-optimal: {reached if reached is not None else 'not reached'} "
                 "(80% / 85%: " + " / ".join(str(v) if v is not None else "—" for k, v in
                                              summary["labels_to_fraction"].items() if k != "0.90") + ")")
    types = ", ".join(
        f"{name}: pop {t['population']:.2f} → " + " ".join(f"{n}:{v:.2f}" for n, v in t["curve"].items()
                                                            if n in (0, 5, 10, 20))
        for name, t in summary["by_type"].items()
    )
    lines.append(f"by type (acc expected): {types}")
    lat = summary["latency_ms"]
    lines.append(f"latency: next pair p50 {lat['selection_p50']:.1f} ms p95 {lat['selection_p95']:.1f} ms; "
                 f"judgment+posterior p50 {lat['judgment_p50']:.1f} ms p95 {lat['judgment_p95']:.1f} ms "
                 f"(n={lat['n']})")
    return "\n".join(lines)


def create_synthetic_study(*, name: str, n_prompts: int = 60, responses: int = 8, seed: int = 0,
                           model_kind: str = "vpl", created_by: Any = None) -> Study:
    """A study of generated responses with controlled attributes, imported through the services."""
    import json

    from feedback import services as fs

    with transaction.atomic():
        study = fs.study_create(name=name, created_by=created_by, overlap_target=3, pairs_per_annotator=20)
        Study.objects.filter(pk=study.pk).update(model_kind=model_kind)
        study.model_kind = model_kind
    rows = synthetic_study_lines(n_prompts, responses, seed)
    fs.study_import(study=study, data="\n".join(json.dumps(r) for r in rows).encode(), filename="synthetic.jsonl")
    return study
