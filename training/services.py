"""Writes of the training domain: model versions, global retraining, online per-user posteriors."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import secrets
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from feedback.models import Annotator, Judgment, Study
from feedback.profile_schema import group_value, groupable_fields
from feedback.realtime import annotator_group, send_event, study_group
from personalization import Posterior
from personalization.guard import label_metrics
from training.embeddings import ensure_vectors, get_encoder, prompt_text
from training.models import AnnotatorPosterior, ModelVersion

# Reads live in training/selectors.py; the writes below need these two.
from training.selectors import active_version, load_version_model

log = logging.getLogger(__name__)
MODEL_KINDS = ("bt", "vpl", "pal")


class TrainingBusy(Exception):
    """Another live worker holds this training job; the task retries later."""


class NotEnoughJudgments(ValueError):
    """A retrain was asked for before the study has judgments a model can learn from."""


# Non-tie judgments outside the held-out slice that a fit needs (a pair of labels: one is no model).
MIN_TRAIN_JUDGMENTS = 2


# ---------------------------------------------------------------------------------------------------
# Data: judgments -> embedding tensors
# ---------------------------------------------------------------------------------------------------
@dataclass
class JudgmentBatch:
    ids: list[int]
    annotator_ids: list[int]
    prompt: torch.Tensor  # (n, d)
    chosen: torch.Tensor  # (n, d)
    rejected: torch.Tensor  # (n, d)


def _judgment_rows(judgments) -> list[Judgment]:
    # Ties carry no direction for a Bradley–Terry likelihood; they count in agreement stats only.
    return list(
        judgments.exclude(choice__in=Judgment.UNDIRECTED)  # ties and "both bad" (issue 12)
        .filter(pair__gold_choice="")  # gold/attention checks test the annotator, not their taste
        .select_related("pair__prompt", "pair__candidate_a", "pair__candidate_b")
        .order_by("id")
    )


def judgments_to_batch(rows: list[Judgment]) -> JudgmentBatch:
    texts: dict[str, str] = {}
    keys = []
    for j in rows:
        pt = prompt_text(j.pair.prompt)
        from feedback.models import text_hash

        ph = text_hash(pt)
        texts[ph] = pt
        a, b = j.pair.candidate_a, j.pair.candidate_b
        texts[a.text_hash] = a.text
        texts[b.text_hash] = b.text
        chosen, rejected = (a, b) if j.choice == Judgment.Choice.A else (b, a)
        keys.append((ph, chosen.text_hash, rejected.text_hash))
    vectors = ensure_vectors(texts) if texts else {}
    dim = get_encoder().dim

    def stack(col: int) -> torch.Tensor:
        if not keys:
            return torch.zeros(0, dim)
        return torch.from_numpy(np.stack([vectors[k[col]] for k in keys]))

    return JudgmentBatch(
        ids=[j.id for j in rows],
        annotator_ids=[j.annotator_id for j in rows],
        prompt=stack(0),
        chosen=stack(1),
        rejected=stack(2),
    )


def is_heldout(judgment_id: int, fraction: float) -> bool:
    # Deterministic in the id, so a retried training job evaluates on exactly the same slice.
    return (judgment_id * 2654435761 % 2**32) / 2**32 < fraction


# ---------------------------------------------------------------------------------------------------
# Model versions
# ---------------------------------------------------------------------------------------------------
def _count_trainable(study: Study, *, up_to: int) -> int:
    """Non-tie judgments outside the held-out slice, counted up to ``up_to`` (stops reading there)."""
    fraction = settings.CHORUS_HELDOUT_FRACTION
    ids = (
        Judgment.objects.filter(pair__study=study, annotator__excluded_at__isnull=True)
        .exclude(choice__in=Judgment.UNDIRECTED)
        .values_list("id", flat=True)
    )
    count = 0
    for judgment_id in ids.iterator(chunk_size=256):
        count += not is_heldout(judgment_id, fraction)
        if count >= up_to:
            break
    return count


def model_version_request(*, study: Study, kind: str | None = None) -> ModelVersion:
    """Queue a global retrain of the study's model now (idempotent while one is queued or training)."""
    kind = kind or study.model_kind
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    with transaction.atomic():
        Study.objects.select_for_update().filter(pk=study.pk).first()
        pending = ModelVersion.objects.filter(
            study=study, kind=kind, status__in=[ModelVersion.Status.QUEUED, ModelVersion.Status.TRAINING]
        ).first()
        if pending:
            return pending
        # Refuse now rather than queue a job that can only fail on a worker.
        trainable = _count_trainable(study, up_to=MIN_TRAIN_JUDGMENTS)
        if trainable < MIN_TRAIN_JUDGMENTS:
            raise NotEnoughJudgments(
                f"the study has {trainable} judgment(s) to train on (ties and the held-out slice excluded); "
                f"a model needs at least {MIN_TRAIN_JUDGMENTS}"
            )
        cutoff = Judgment.objects.filter(pair__study=study).aggregate(m=Max("id"))["m"] or 0
        version = ModelVersion.objects.create(study=study, kind=kind, data_cutoff=cutoff)
        from training.recovery import send_training_job

        # After COMMIT (the worker must find the row); a down broker leaves it queued for the sweep to re-send.
        transaction.on_commit(functools.partial(send_training_job, version.pk))
    return version


def study_training_settings_update(*, study: Study, selector: str | None = None, model_kind: str | None = None) -> Study:
    """Set how a study picks pairs (a registered selector) and which model kind it trains next.

    Changing the model kind does not retrain at once: the next due (or requested) retrain uses it, and
    the active version keeps serving until a version of the new kind has been evaluated.
    """
    from feedback.selection import SELECTORS

    if selector is not None and selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}")
    if model_kind is not None and model_kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {model_kind!r}")
    changes = {k: v for k, v in {"selector": selector, "model_kind": model_kind}.items() if v is not None}
    if changes:
        Study.objects.filter(pk=study.pk).update(**changes)
        for key, value in changes.items():
            setattr(study, key, value)
    return study


def _claim(version_id: int) -> bool:
    """Conditional UPDATE: only one worker trains a version; a dead worker's stale claim can be taken over."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CHORUS_TRAINING_STALE_SECONDS)
    claimable = Q(status=ModelVersion.Status.QUEUED) | Q(status=ModelVersion.Status.TRAINING, heartbeat_at__lt=stale)
    from django.db.models import F

    return bool(
        ModelVersion.objects.filter(claimable, pk=version_id).update(
            status=ModelVersion.Status.TRAINING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1
        )
    )


def _heartbeat(version_id: int) -> None:
    ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.TRAINING).update(heartbeat_at=timezone.now())


@contextlib.contextmanager
def _heartbeat_while(version_id: int):
    """Keep the claim fresh during a long fit, so no second worker takes over a live job."""
    stop = threading.Event()
    interval = max(1.0, settings.CHORUS_TRAINING_STALE_SECONDS / 4)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                _heartbeat(version_id)
        finally:
            connection.close()  # this thread's own DB connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{version_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def model_version_train(*, model_version_id: int) -> ModelVersion:
    """Train, evaluate on the held-out slice, and activate if not worse than the active version.

    Any failure marks only this version failed; the active version is never touched before the
    new one has been saved and evaluated.
    """
    version = ModelVersion.objects.select_related("study").get(pk=model_version_id)
    if version.status not in (ModelVersion.Status.QUEUED, ModelVersion.Status.TRAINING):
        return version  # replayed task: already done
    if not _claim(model_version_id):
        version.refresh_from_db()
        if version.status == ModelVersion.Status.TRAINING:
            raise TrainingBusy(f"model version {model_version_id} is being trained by another worker")
        return version
    try:
        _train_and_evaluate(version)
    except Exception as exc:
        log.exception("training of model version %s failed", model_version_id)
        ModelVersion.objects.filter(pk=model_version_id).update(
            status=ModelVersion.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-4000:]}",
            finished_at=timezone.now(),
        )
    version.refresh_from_db()
    send_event(study_group(version.study_id), "model_version", {"id": version.pk, "status": version.status})
    return version


def _profiles(study: Study) -> dict[int, dict[str, Any]]:
    return {
        a.pk: (a.profile.data if hasattr(a, "profile") else {})
        for a in Annotator.objects.filter(study=study).select_related("profile")
    }


def _fit(kind: str, batch: JudgmentBatch, profiles: dict[int, dict[str, Any]], seed: int):
    from personalization import FitConfig, ModelConfig, PreferenceData, fit

    user_ids = [str(a) for a in dict.fromkeys(batch.annotator_ids)]
    index = {u: i for i, u in enumerate(user_ids)}
    data = PreferenceData(
        torch.tensor([index[str(a)] for a in batch.annotator_ids], dtype=torch.long),
        batch.prompt,
        batch.chosen,
        batch.rejected,
        user_ids,
    )
    config = FitConfig(progress=False, model=ModelConfig(mixture_max_k=settings.CHORUS_MIXTURE_MAX_K))
    if getattr(settings, "CHORUS_FIT_EPOCHS", 0):  # tests train a few epochs only (config.settings.test)
        config = replace(config, epochs=settings.CHORUS_FIT_EPOCHS)
    return fit(kind, data, profiles={str(k): v for k, v in profiles.items()}, config=config, seed=seed)


def _fit_population(batch: JudgmentBatch, seed: int):
    """The population Bradley–Terry model on the same training slice (the guard's baseline)."""
    from personalization import FitConfig, PreferenceData, fit

    user_ids = [str(a) for a in dict.fromkeys(batch.annotator_ids)]
    index = {u: i for i, u in enumerate(user_ids)}
    data = PreferenceData(torch.tensor([index[str(a)] for a in batch.annotator_ids], dtype=torch.long),
                          batch.prompt, batch.chosen, batch.rejected, user_ids)
    config = FitConfig(progress=False)
    if getattr(settings, "CHORUS_FIT_EPOCHS", 0):
        config = replace(config, epochs=settings.CHORUS_FIT_EPOCHS)
    return fit("bt", data, config=config, seed=seed)


def _population_guard(model, train: JudgmentBatch, held: JudgmentBatch, profiles: dict[int, dict[str, Any]],
                      metrics: dict[str, Any], *, seed: int):
    """A personal model that predicts the held-out judgments worse than a population BT trained on the
    same slice falls back to it for every annotator (the model then predicts exactly like BT; its
    posteriors stay, so it can be re-enabled by the next retrain). "Worse" = higher cross-entropy by more
    than one standard error of the paired per-judgment difference, or lower accuracy by more than that.
    The decision and both models' held-out figures go to ``metrics["population_guard"]``."""
    bt = _fit_population(train, seed=seed)
    bt_metrics = _evaluate(bt, train, held, profiles)
    p_pers, p_bt = metrics["_p"].clamp(1e-6, 1 - 1e-6), bt_metrics["_p"].clamp(1e-6, 1 - 1e-6)
    diff = torch.log(p_bt) - torch.log(p_pers)  # > 0 where the personal model is worse
    se = float(diff.std() / math.sqrt(diff.numel())) if diff.numel() > 1 else 0.0
    acc_diff = (p_bt > 0.5).float() - (p_pers > 0.5).float()
    acc_se = float(acc_diff.std() / math.sqrt(acc_diff.numel())) if acc_diff.numel() > 1 else 0.0
    worse = float(diff.mean()) > se or float(acc_diff.mean()) > acc_se
    record = {
        "population": {"accuracy": bt_metrics["accuracy"], "cross_entropy": bt_metrics["cross_entropy"],
                       "ece": bt_metrics["ece"]},
        "personal": {"accuracy": metrics["accuracy"], "cross_entropy": metrics["cross_entropy"], "ece": metrics["ece"]},
        "fallback": worse,
    }
    if worse:
        log.info("personal model worse than the population BT on held-out judgments: falling back %s", record)
        model.attach_population(bt, 0.0)
        model.config = replace(model.config, temperature=1.0)
        model.info["population_fallback"] = True
        fallback = _evaluate(model, train, held, profiles)
        for key in ("accuracy", "cross_entropy", "ece", "groups"):
            metrics[key] = fallback[key]
        metrics["_p"] = fallback["_p"]
    metrics["population_guard"] = record
    return model


def _evaluate(
    model, train: JudgmentBatch, heldout: JudgmentBatch, profiles: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """Held-out accuracy: population model (no user info) vs personalized (user's train labels + profile)."""
    if not heldout.ids:
        return {"n_heldout": 0}
    by_user: dict[int, list[int]] = {}
    for i, a in enumerate(train.annotator_ids):
        by_user.setdefault(a, []).append(i)
    population = model.prior(None)
    correct_pop = np.zeros(len(heldout.ids), dtype=bool)
    correct_pers = np.zeros(len(heldout.ids), dtype=bool)
    p_pers = torch.zeros(len(heldout.ids))  # p(chosen ≻ rejected) of each held-out judgment
    p_pop = torch.zeros(len(heldout.ids))
    rows_by_user: dict[int, list[int]] = {}
    for i, a in enumerate(heldout.annotator_ids):
        rows_by_user.setdefault(a, []).append(i)
    for a, rows in rows_by_user.items():
        idx = torch.tensor(rows)
        p, c, r = heldout.prompt[idx], heldout.chosen[idx], heldout.rejected[idx]
        ctx_idx = by_user.get(a, [])
        ctx = (train.prompt[ctx_idx], train.chosen[ctx_idx], train.rejected[ctx_idx]) if ctx_idx else None
        post = model.posterior(ctx, profile=profiles.get(a) or None)
        p_pers[idx] = model.predict_proba(post, p, c, r)[0]
        p_pop[idx] = model.predict_proba(population, p, c, r)[0]
        correct_pers[rows] = (p_pers[idx] > 0.5).numpy()
        correct_pop[rows] = (p_pop[idx] > 0.5).numpy()
    pers, pop = label_metrics(p_pers), label_metrics(p_pop)
    metrics: dict[str, Any] = {
        "n_heldout": len(heldout.ids),
        "accuracy": float(correct_pers.mean()),
        "accuracy_population": float(correct_pop.mean()),
        "cross_entropy": pers["ce"],
        "cross_entropy_population": pop["ce"],
        "ece": pers["ece"],
        "ece_population": pop["ece"],
        "groups": {},
        "_p": p_pers,  # per-judgment predictions for the population guard (dropped before saving)
    }
    for field in groupable_fields():
        groups: dict[str, dict[str, Any]] = {}
        for g in sorted({group_value(profiles.get(a, {}), field) for a in rows_by_user}):
            rows = [i for a, rs in rows_by_user.items() if group_value(profiles.get(a, {}), field) == g for i in rs]
            groups[g] = {
                "n": len(rows),
                "accuracy": float(correct_pers[rows].mean()),
                "accuracy_population": float(correct_pop[rows].mean()),
            }
        metrics["groups"][field] = groups
    return metrics


def _train_and_evaluate(version: ModelVersion) -> None:
    study = version.study
    # Annotators a researcher excluded (feedback.services.annotator_set_excluded) do not train the model.
    rows = _judgment_rows(
        Judgment.objects.filter(pair__study=study, id__lte=version.data_cutoff, annotator__excluded_at__isnull=True)
    )
    fraction = settings.CHORUS_HELDOUT_FRACTION
    train_rows = [j for j in rows if not is_heldout(j.id, fraction)]
    held_rows = [j for j in rows if is_heldout(j.id, fraction)]
    if len(train_rows) < MIN_TRAIN_JUDGMENTS:
        raise NotEnoughJudgments(f"not enough judgments to train on ({len(train_rows)})")
    profiles = _profiles(study)
    train, held = judgments_to_batch(train_rows), judgments_to_batch(held_rows)
    _heartbeat(version.pk)
    started = time.perf_counter()
    with _heartbeat_while(version.pk):
        model = _fit(version.kind, train, profiles, seed=version.pk)
    fit_seconds = time.perf_counter() - started
    _heartbeat(version.pk)
    metrics = _evaluate(model, train, held, profiles)
    if version.kind != "bt" and metrics.get("n_heldout"):
        with _heartbeat_while(version.pk):
            model = _population_guard(model, train, held, profiles, metrics, seed=version.pk)
    metrics.pop("_p", None)
    fit_guard = model.info.get("guard") or {}
    if fit_guard:
        # What the fit's own guard chose on held-out users (personalization/guard.py), without the
        # candidate list: the model files keep that.
        metrics["fit_guard"] = {k: fit_guard[k] for k in ("chosen", "skipped", "personal_weight", "prior_scale",
                                                            "mixture", "temperature", "margin_vs_bt", "heldout",
                                                            "bt") if k in fit_guard}
    metrics["fit_seconds"] = round(fit_seconds, 3)
    metrics["n_train"] = len(train_rows)
    # How many user types the prior over the latent has (1: a single Gaussian), for logs and the registry.
    metrics["prior_types"] = int(model.mix_log_weights.numel()) if model.has_mixture else int(model.latent_dim > 0)

    # Write the artifact to a temp folder and rename: a killed worker never leaves a half model behind.
    # A random token keeps two databases (e.g. parallel test runs) sharing ARTIFACTS_DIR from ever
    # overwriting each other's version folders: the model cache is keyed by path.
    final = Path(settings.ARTIFACTS_DIR) / f"study-{study.pk}" / f"version-{version.pk}-{secrets.token_hex(4)}"
    tmp = final.with_name(final.name + f".tmp-{int(time.time() * 1000)}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)

    _activate_if_better(version, metrics, final, n_train=len(train_rows), n_heldout=len(held_rows),
                        baseline=functools.partial(_evaluate, train=train, heldout=held, profiles=profiles))


# Compare-and-set rounds before the last one, which compares while holding the lock (a study whose active
# version changes under every comparison is pathological; the last round guarantees the job finishes).
ACTIVATION_ROUNDS = 3


def _activate_if_better(version: ModelVersion, metrics: dict[str, Any], artifact: Path, *, n_train: int,
                        n_heldout: int, baseline: Any) -> None:
    """Record the trained version and make it the active one if it is not worse than the active version.

    ``baseline(model)`` evaluates a model on the new version's held-out slice with the same user context, so
    the comparison is fair. That evaluation (load a model, predict every held-out judgment) is the slow part:
    it runs with no lock held, and the row lock covers only the compare-and-set — the active version is still
    the one compared with, so retire it and activate this one. If another version became active meanwhile,
    compare again with that one. A newer version is never replaced by an older one.
    """
    study_id = version.study_id
    for round_ in range(ACTIVATION_ROUNDS + 1):
        seen = active_version(study_id)
        before = _baseline_accuracy(version, seen, metrics, baseline)
        with transaction.atomic():
            current = (
                ModelVersion.objects.select_for_update().filter(study_id=study_id, status=ModelVersion.Status.ACTIVE)
                .first()
            )
            if (current and current.pk) != (seen and seen.pk):
                if round_ < ACTIVATION_ROUNDS:
                    continue  # another version was activated meanwhile: compare with that one (lock released)
                before = _baseline_accuracy(version, current, metrics, baseline)  # the last round: under the lock
            _record(version, current, before, metrics, artifact, n_train=n_train, n_heldout=n_heldout)
            return


def _baseline_accuracy(version: ModelVersion, current: ModelVersion | None, metrics: dict[str, Any],
                       baseline: Any) -> float | None:
    """The active version's held-out accuracy on the new version's slice (None: nothing to compare)."""
    if current is None or current.pk > version.pk or not metrics.get("n_heldout"):
        return None
    return baseline(load_version_model(current)).get("accuracy")


def _record(version: ModelVersion, current: ModelVersion | None, before: float | None, metrics: dict[str, Any],
            artifact: Path, *, n_train: int, n_heldout: int) -> None:
    """Under the row lock of the active version: store the outcome, activating (and retiring) if better."""
    if current is not None and current.pk > version.pk:
        better = False  # a newer version is active (this job was slow or redelivered): never replace it
    elif current is not None and before is not None:
        metrics["accuracy_active_before"] = before
        better = metrics["accuracy"] >= before
    else:
        better = True
    status = ModelVersion.Status.ACTIVE if better else ModelVersion.Status.READY
    if better and current is not None:
        current.status = ModelVersion.Status.RETIRED
        current.save(update_fields=["status"])
    ModelVersion.objects.filter(pk=version.pk).update(
        status=status,
        metrics=metrics,
        artifact_path=str(artifact),
        n_train=n_train,
        n_heldout=n_heldout,
        finished_at=timezone.now(),
        error="",
    )
    if better:
        from training.broker import publish
        from training.tasks import refresh_study_posteriors

        study_id = version.study_id
        # A lost message here only delays the refresh: the sweep catches lagging posteriors up.
        transaction.on_commit(lambda: publish(lambda: refresh_study_posteriors.delay(study_id),
                                              what=f"posterior refresh of study {study_id}"))


def retrain_rule(study: Study) -> tuple[int, int, int]:
    """(judgments before the first model, new judgments per retrain, minutes per retrain); 0 = never.

    A study's own rule (its settings card) wins over the site default (CHORUS_RETRAIN_*): with
    retrain_every_judgments set, the first model also comes after that many judgments.
    """
    every_j = study.retrain_every_judgments
    every_m = study.retrain_every_minutes
    first = settings.CHORUS_RETRAIN_MIN_JUDGMENTS if every_j is None else every_j
    every = settings.CHORUS_RETRAIN_EVERY_JUDGMENTS if every_j is None else every_j
    minutes = settings.CHORUS_RETRAIN_EVERY_MINUTES if every_m is None else every_m
    return first, every, minutes


def retrain_if_due(*, study: Study, force_time: bool = False) -> ModelVersion | None:
    """Queue a retrain after N new judgments, or after T minutes when anything new arrived."""
    last = ModelVersion.objects.filter(study=study).exclude(status=ModelVersion.Status.FAILED).order_by("-id").first()
    if last and last.status in (ModelVersion.Status.QUEUED, ModelVersion.Status.TRAINING):
        return None
    total = Judgment.objects.filter(pair__study=study, annotator__excluded_at__isnull=True).exclude(
        choice__in=Judgment.UNDIRECTED
    )
    cutoff = last.data_cutoff if last else 0
    new = total.filter(id__gt=cutoff).count()
    first, every, minutes = retrain_rule(study)
    if last is None:
        due = first > 0 and new >= first
    else:
        age = timezone.now() - (last.finished_at or last.created_at)
        due = (every > 0 and new >= every) or (
            new > 0 and minutes > 0 and (force_time or age >= timedelta(minutes=minutes))
        )
    if not due:
        return None
    try:
        return model_version_request(study=study)
    except NotEnoughJudgments:  # e.g. every new judgment fell in the held-out slice; wait for more
        return None


# ---------------------------------------------------------------------------------------------------
# Per-user online posteriors
# ---------------------------------------------------------------------------------------------------
def posterior_update(*, annotator_id: int) -> AnnotatorPosterior | None:
    """Fold every judgment of the annotator not yet in their posterior into it, in order.

    Catching up on everything newer than last_judgment_id (rather than "the judgment that triggered
    me") makes replays no-ops and lets updates skipped during a broker outage catch up later.
    Each label is predicted before it is folded in (prequential accuracy: honest, never trained on).
    """
    annotator = Annotator.objects.select_related("study", "profile").get(pk=annotator_id)
    version = active_version(annotator.study_id)
    if version is None:
        return None
    model = load_version_model(version)
    with transaction.atomic():
        state, created = AnnotatorPosterior.objects.select_for_update().get_or_create(
            annotator=annotator, model_version=version, defaults={"state": {}}
        )
        post = (
            Posterior.from_dict(state.state)
            if state.state
            else model.prior(annotator.profile.data if hasattr(annotator, "profile") else None)
        )
        rows = _judgment_rows(Judgment.objects.filter(annotator=annotator, id__gt=state.last_judgment_id))
        if not rows:
            if created:
                state.state = post.to_dict()
                state.save()
            return state
        batch = judgments_to_batch(rows)
        for i in range(len(rows)):
            p, c, r = batch.prompt[i : i + 1], batch.chosen[i : i + 1], batch.rejected[i : i + 1]
            prob = float(model.predict_proba(post, p, c, r)[0][0])
            state.n_predicted += 1
            state.n_correct += int(prob > 0.5)
            post = model.update(post, p, c, r)
        state.state = post.to_dict()
        state.n_labels = post.n_labels
        state.last_judgment_id = max(state.last_judgment_id, rows[-1].id)
        state.save()
    accuracy = state.accuracy
    send_event(
        annotator_group(annotator.pk),
        "model_updated",
        {
            "n_labels": state.n_predicted,
            "accuracy": accuracy,
            "message": (
                f"Your model now predicts {round(100 * accuracy)}% of your choices"
                f" ({state.n_correct} of {state.n_predicted}, each predicted before it was learned)."
            )
            if accuracy is not None
            else "",
        },
    )
    return state


def stale_retry_seconds() -> int:
    return max(5, settings.CHORUS_TRAINING_STALE_SECONDS // 2)
