"""Writes that recover training from lost messages and dead workers (the periodic sweep, run by beat).

Nothing in the normal path depends on the sweep; it repairs what a fault left behind:
  - a retrain whose message never reached the broker (it was down at commit) or was lost stays `queued`
    forever, and the retrain rule skips a study with a queued version: re-send it;
  - a worker killed mid-fit leaves its version `training` with a heartbeat that stops; the broker would
    hand the message back only after its visibility timeout (an hour on Redis): take the claim over;
  - annotators whose judgments fell in a broker outage never had their posterior updated: update them.
Every step is a conditional UPDATE or an idempotent task, so two sweeps at once (two beat processes, a
manual run) do no harm.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Max, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from feedback.models import Annotator, Judgment
from training.broker import publish
from training.models import AnnotatorPosterior, ModelVersion

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    resent: int = 0  # queued versions whose message was sent again
    taken_over: int = 0  # training versions with a stale heartbeat, handed back to the queue
    failed: int = 0  # versions whose workers died CHORUS_TRAINING_MAX_ATTEMPTS times
    annotators: int = 0  # lagging posteriors sent for an update

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def send_training_job(version_id: int) -> bool:
    """Publish the retrain message for a version and record when; False (and enqueued_at cleared) if the
    broker is down, so the sweep re-sends it as soon as the broker is back."""
    from training.tasks import retrain_study_model

    ModelVersion.objects.filter(pk=version_id).update(enqueued_at=timezone.now())
    sent = publish(lambda: retrain_study_model.delay(version_id), what=f"training of model version {version_id}")
    if not sent:
        ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.QUEUED).update(enqueued_at=None)
    return sent


def _resend_queued(now) -> int:
    overdue = now - timedelta(seconds=settings.CHORUS_TRAINING_REQUEUE_SECONDS)
    waiting = Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=overdue)
    resent = 0
    for version_id in ModelVersion.objects.filter(waiting, status=ModelVersion.Status.QUEUED).values_list("id", flat=True):
        # Claim the re-send: only one sweep sends it (a duplicate would be harmless, but noisy).
        if ModelVersion.objects.filter(waiting, pk=version_id, status=ModelVersion.Status.QUEUED).update(enqueued_at=now):
            resent += send_training_job(version_id)
    return resent


def _take_over_stale(now) -> tuple[int, int]:
    stale = Q(status=ModelVersion.Status.TRAINING) & (
        Q(heartbeat_at__lt=now - timedelta(seconds=settings.CHORUS_TRAINING_STALE_SECONDS)) | Q(heartbeat_at__isnull=True)
    )
    taken = failed = 0
    for version_id, attempts in ModelVersion.objects.filter(stale).values_list("id", "attempts"):
        if attempts >= settings.CHORUS_TRAINING_MAX_ATTEMPTS:
            failed += ModelVersion.objects.filter(stale, pk=version_id).update(
                status=ModelVersion.Status.FAILED,
                finished_at=now,
                error=f"its worker stopped (no heartbeat) on each of {attempts} attempts; not retried again",
            )
            continue
        # Conditional UPDATE: the dead worker's claim goes back to the queue, exactly once.
        if ModelVersion.objects.filter(stale, pk=version_id).update(status=ModelVersion.Status.QUEUED, enqueued_at=now):
            taken += 1
            log.warning("model version %s: worker heartbeat stale, job handed to another worker", version_id)
            send_training_job(version_id)
    return taken, failed


def _lagging_annotator_ids(now) -> list[int]:
    """Annotators of studies with an active model whose posterior misses a (non-tie) judgment older than
    CHORUS_POSTERIOR_LAG_SECONDS (younger ones are still on their way through the normal task)."""
    grace = now - timedelta(seconds=settings.CHORUS_POSTERIOR_LAG_SECONDS)
    folded = AnnotatorPosterior.objects.filter(
        annotator=OuterRef("pk"), model_version__status=ModelVersion.Status.ACTIVE
    ).values("last_judgment_id")[:1]
    newest = (
        Judgment.objects.filter(annotator=OuterRef("pk"), created_at__lt=grace)
        .exclude(choice=Judgment.Choice.TIE)
        .order_by()
        .values("annotator")
        .annotate(m=Max("id"))
        .values("m")[:1]
    )
    qs = (
        # At most one active version per study (a constraint), so this join adds no duplicate rows.
        Annotator.objects.filter(study__model_versions__status=ModelVersion.Status.ACTIVE)
        .annotate(newest=Subquery(newest), folded=Coalesce(Subquery(folded), Value(0)))
        .filter(newest__gt=F("folded"))
        .order_by("id")
        .values_list("id", flat=True)
    )
    return list(qs[: settings.CHORUS_SWEEP_MAX_ANNOTATORS])


def _catch_up_posteriors(now) -> int:
    from training.tasks import update_annotator_posterior

    sent = 0
    for annotator_id in _lagging_annotator_ids(now):
        send = functools.partial(update_annotator_posterior.delay, annotator_id)
        if not publish(send, what=f"posterior of {annotator_id}"):
            break  # the broker is down: the next sweep tries again
        sent += 1
    return sent


def training_sweep() -> SweepResult:
    now = timezone.now()
    result = SweepResult()
    result.taken_over, result.failed = _take_over_stale(now)
    result.resent = _resend_queued(now)
    result.annotators = _catch_up_posteriors(now)
    if result.resent or result.taken_over or result.failed or result.annotators:
        log.info("training sweep: %s", result.as_dict())
    return result
