"""The simulation protocol: simulated annotators with known tastes, run through the real services.

    .venv/bin/python benchmarks/simulation_protocol.py --create-synthetic --annotators 10 --labels 20 --strategy info_gain
    .venv/bin/python benchmarks/simulation_protocol.py --study 3 --annotators 20 --labels 30 \
        --strategy random,info_gain --json out.json
    .venv/bin/python benchmarks/simulation_protocol.py --create-synthetic --strategy random,info_gain \
        --profiles profile,no_profile --warmup-annotators 96 --warmup-labels 40

(It was ``manage.py simulate``; a research harness, so it lives outside the app.) Run as a script it uses
the database of DJANGO_SETTINGS_MODULE (default config.settings.base, as manage.py) and ADDS annotators
and judgments to the study: use a sandbox study. Nothing else of the study is written: the run's
settings (selector, overlap target, quota, an open status) live on an unsaved copy of the study that the
services are handed (``_run_view``), and the held-out pairs are kept from the selectors in this process
only (``_held_out``), so a run that dies midway leaves the study's row and its pairs' settings as they were.

The people come from ``personalization.synthetic`` (the project's one population model: K user types
with true reward weights over VISIBLE response attributes, Bradley–Terry label noise, PRISM-style
profiles correlated with the type whose stated-preference sliders echo the weights) with the text
presets of ``personalization.synthetic_text``. Attributes come from ``Candidate.metadata`` when every
candidate of the study has them (the demo study does) and are otherwise measured from the text, so any
study works.

``run_simulation``: a warm-up population labels with the random selector and a global model is trained
(``model_version_request``); then NEW annotators join, fill in their profile and label one pair at a
time with the study's selector set to the strategy — ``annotator_join`` → ``profile_update`` →
``assignment_next`` → ``judgment_create`` (the judgment hook updates their online posterior, eagerly) —
and after n ∈ checkpoints labels the posterior under the active model predicts FRESH held-out pairs of
the study that nobody labels during the run.

Every strategy (and profile mode: annotators who fill in their profile or skip it) runs on the same
simulated people with the same label noise, starting from the same model version, so the curves are a
paired comparison. Each annotator's "model ceiling" (the best θ under the network for their true tastes)
is reported next to the Bayes-optimal accuracy: labels can bring the posterior up to it, on average not past.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

if __name__ == "__main__":  # a script: the repository on the path and Django set up before the app's imports
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import django

    django.setup()

from django.db import transaction  # noqa: E402

from feedback.models import Annotator, Pair, Study, text_hash  # noqa: E402
from personalization.synthetic import Population, SyntheticUser  # noqa: E402
from personalization.synthetic_text import (  # noqa: E402
    ATTRIBUTES,
    POPULATIONS,
    metadata_attribute,
    synthetic_study_lines,
    text_attributes,
)

STRATEGIES: tuple[str, ...] = ("random", "uncertainty", "info_gain", "mixed")
PROFILE_MODES: tuple[str, ...] = ("profile", "no_profile")
DEFAULT_CHECKPOINTS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)

# ---------------------------------------------------------------------------------------------------
# Visible attributes of the study's pairs
# ---------------------------------------------------------------------------------------------------
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


def _refuse_save(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("a simulation's view of a study is never saved: it carries the run's settings")


def _run_view(study: Study, **values: Any) -> Study:
    """The study as this run sees it: a fresh, unsaved instance with the run's settings, handed to the
    services in place of the stored row.

    The services read these settings from the Study instance they are given, never from the database:
    annotator_join's ``study`` (status), then ``annotator.study`` in assignment_next (status, quota,
    selector, overlap target), the selectors' eligible_pairs (overlap target) and judgment_create (quota).
    So the annotators of a run carry this view (``_join``) and no row is written. (This once UPDATEd the
    live study's settings and put them back at the end: a crash in between left the study changed.)
    save() is refused on the view, so a service that ever saves the study it was handed fails loudly
    instead of writing the run's settings to the live study.
    """
    view = Study.objects.get(pk=study.pk)
    for name, value in values.items():
        setattr(view, name, value)
    view.save = _refuse_save  # type: ignore[method-assign]  # this instance only: Model.save is untouched
    return view


@contextlib.contextmanager
def _held_out(pair_ids: Sequence[int]) -> Iterator[None]:
    """Keep the evaluation pairs out of every selector, in this process only.

    Selectors rank feedback.selection.eligible_pairs; the run wraps it to exclude the held-out ids. No
    row is written (this once set their n_assigned to the overlap target and put it back at the end: a
    crash in between left a live study's pairs looking full for good).
    """
    from feedback import selection
    from training import active_learning

    held = list(pair_ids)
    real = selection.eligible_pairs

    def eligible_pairs(annotator: Annotator):
        return real(annotator).exclude(id__in=held)

    # active_learning imported the function by name: both references are wrapped.
    with mock.patch.object(selection, "eligible_pairs", eligible_pairs), \
            mock.patch.object(active_learning, "eligible_pairs", eligible_pairs):
        yield


@contextlib.contextmanager
def _no_auto_retrain(study_pk: int) -> Iterator[None]:
    """Retraining happens only where the protocol asks for it (warm-up, --retrain-every), in this process.

    The judgment hook asks training.services.retrain_rule whether the study is due; for the run's study it
    answers "never" (0) here. Overriding the site default (CHORUS_RETRAIN_*) alone missed a study with its
    own rule (retrain_every_judgments wins over the default), which then retrained in the middle of a
    strategy; writing the study's rule instead would be the crash hazard _run_view avoids.
    """
    from training import services as training_services

    real = training_services.retrain_rule

    def retrain_rule(study: Study) -> tuple[int, int, int]:
        return (0, 0, 0) if study.pk == study_pk else real(study)

    with mock.patch.object(training_services, "retrain_rule", retrain_rule):
        yield


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

    def accuracy(self, pop: Population, user: SyntheticUser) -> float:
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


def _label_one(annotator: Annotator, user: SyntheticUser, pop: Population, table: PairTable, rng: random.Random,
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


def _join(view: Study, user: SyntheticUser, tag: str, with_profile: bool = True) -> Annotator:
    """A simulated annotator of the run's view of the study (``_run_view``), carrying that view."""
    from feedback import services as fs

    annotator, _ = fs.annotator_join(study=view, external_id=f"{tag}-{user.id}")
    fs.annotator_consent(annotator=annotator)
    if with_profile:
        allowed = set(view.profile_fields)
        fs.profile_update(annotator=annotator, data={k: v for k, v in user.profile.items() if k in allowed})
    # Fresh instance: the profile cached on the old one predates the update. Its study is the run's view,
    # not the stored row, so the services it is handed to read the run's settings.
    fresh = Annotator.objects.select_related("profile").get(pk=annotator.pk)
    fresh.study = view
    return fresh


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
    pop: Population = preset() if config.label_scale is None else preset(label_scale=config.label_scale)
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
    # The run's settings, in this process only (_run_view): every phase's annotators carry a view of the
    # study with them and its selector; the study's row is never written.
    run_settings = {"overlap_target": overlap, "pairs_per_annotator": quota, "status": Study.Status.ACTIVE}
    with _eager_tasks(), _no_auto_retrain(study.pk), _held_out(eval_table.pair_ids.tolist()):
        kind = config.kind or study.model_kind
        if config.warmup_annotators:
            warm_view = _run_view(study, selector="random", **run_settings)
            log(f"warm-up: {config.warmup_annotators} annotators x {config.warmup_labels} labels (random)")
            timer = _Timer()
            for user in pop.draw_users(config.warmup_annotators, rng, prefix=f"warm{config.seed}-"):
                annotator = _join(warm_view, user, f"sim-{run_tag}")
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
                users = pop.draw_users(config.annotators, cohort_rng, prefix=f"new{config.seed}-")
                label_rng = random.Random(cohort_seed + 1)
                timer = _Timer()
                per_user: list[dict[str, Any]] = []
                n_since_retrain = 0
                log(f"strategy {key}: {config.annotators} new annotators x {config.labels} labels")
                view = _run_view(study, selector=strategy, **run_settings)
                for user in users:
                    annotator = _join(view, user, f"sim-{run_tag}-{mode}-{strategy}", mode == "profile")
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


# ---------------------------------------------------------------------------------------------------
# The command line (formerly ``manage.py simulate``)
# ---------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Parse the arguments, run the protocol on a study (``--study`` or a new ``--create-synthetic`` one),
    print the curves and return the result; SystemExit with a message on a bad argument or a failed run."""
    from training.services import MODEL_KINDS

    ap = argparse.ArgumentParser(description="Run simulated annotators (known tastes) through the services "
                                             "and print learning curves.")
    ap.add_argument("--study", type=int, help="id of the study to simulate on")
    ap.add_argument("--create-synthetic", action="store_true",
                    help="create a study of generated responses with controlled attributes")
    ap.add_argument("--prompts", type=int, default=60, help="prompts of a --create-synthetic study")
    ap.add_argument("--annotators", type=int, default=20, help="new annotators per strategy")
    ap.add_argument("--labels", type=int, default=30, help="labels each new annotator gives")
    ap.add_argument("--strategy", default="info_gain",
                    help=f"one or a comma list of {', '.join(STRATEGIES)} (same annotators for each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain-every", type=int, default=0,
                    help="global retrain after every R new labels (0: keep the warm-up model)")
    ap.add_argument("--eval-pairs", type=int, default=200, help="held-out pairs nobody labels")
    ap.add_argument("--warmup-annotators", type=int, default=24)
    ap.add_argument("--warmup-labels", type=int, default=30)
    ap.add_argument("--kind", choices=MODEL_KINDS, help="global model kind (default: the study's)")
    ap.add_argument("--population", choices=sorted(POPULATIONS), default="pluralistic")
    ap.add_argument("--label-scale", type=float, help="Bradley–Terry inverse temperature")
    ap.add_argument("--profiles", default="profile",
                    help="comma list of profile (annotators fill in their profile) and no_profile "
                         "(they skip it): each runs every strategy on the same people")
    ap.add_argument("--checkpoints", help="comma list of label counts to measure at")
    ap.add_argument("--json", dest="json_out", help="write the full results here")
    opts = ap.parse_args(argv)

    strategies = tuple(s.strip() for s in opts.strategy.split(",") if s.strip())
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise SystemExit(f"unknown strategy {bad}; choose from {', '.join(STRATEGIES)}")
    if opts.create_synthetic:
        study = create_synthetic_study(name=f"Simulation (seed {opts.seed}) {Study.objects.count() + 1}",
                                       n_prompts=opts.prompts, seed=opts.seed, model_kind=opts.kind or "vpl")
        out(f"created study {study.pk} '{study.name}'")
    elif opts.study is None:
        raise SystemExit("give --study ID or --create-synthetic")
    else:
        found = Study.objects.filter(pk=opts.study).first()
        if found is None:
            raise SystemExit(f"no study {opts.study}")
        study = found
    config = SimulationConfig(
        annotators=opts.annotators,
        labels=opts.labels,
        strategies=strategies,
        seed=opts.seed,
        retrain_every=opts.retrain_every,
        eval_pairs=opts.eval_pairs,
        warmup_annotators=opts.warmup_annotators,
        warmup_labels=opts.warmup_labels,
        kind=opts.kind,
        population=opts.population,
        label_scale=opts.label_scale,
        profile_modes=tuple(m.strip() for m in opts.profiles.split(",") if m.strip()),
    )
    if opts.checkpoints:
        config.checkpoints = tuple(int(c) for c in opts.checkpoints.split(","))
    try:
        result = run_simulation(study, config, log=out)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(str(exc)) from exc
    out(f"done in {result['seconds']}s")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(result, indent=2, default=str))
        out(f"wrote {opts.json_out}")
    return result


if __name__ == "__main__":
    main()
