"""The recovery sweep (training.recovery): lost training messages, dead workers, lagging posteriors.

These run tasks in-process (eager), so a re-sent training job trains at once; tests/training/test_worker.py
repeats the dead-worker case against a real worker process and a real beat.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from feedback import services as feedback_services
from feedback.models import Judgment
from tests.training.conftest import label_all
from training import recovery, services
from training.models import AnnotatorPosterior, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained_study(style_study, settings):
    settings.CHORUS_FIT_EPOCHS = 2
    annotators = label_all(style_study, n_annotators=4, per_annotator=8)
    version = services.model_version_request(study=style_study, kind="bt")
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.ACTIVE, version.error
    return style_study, annotators, version


def _stuck(study, *, status: str, ago: int, attempts: int = 1, enqueued: bool = True) -> ModelVersion:
    """A version as a fault leaves it: queued with a lost message, or training under a dead worker."""
    at = timezone.now() - timedelta(seconds=ago)
    cutoff = Judgment.objects.filter(pair__study=study).order_by("-id").values_list("id", flat=True).first()
    return ModelVersion.objects.create(
        study=study, kind="bt", status=status, data_cutoff=cutoff, attempts=attempts,
        enqueued_at=at if enqueued else None, started_at=at, heartbeat_at=at,
    )


def test_it_takes_over_a_training_job_whose_worker_died(trained_study, settings):
    study, _, first = trained_study
    settings.CHORUS_TRAINING_STALE_SECONDS = 30
    dead = _stuck(study, status="training", ago=31)
    result = recovery.training_sweep()
    assert (result.taken_over, result.failed) == (1, 0)
    dead.refresh_from_db()
    assert dead.status in ("active", "ready"), dead.error  # re-sent, and (in-process) trained at once
    assert dead.attempts == 2
    assert ModelVersion.objects.filter(study=study, status="active").count() == 1


def test_it_leaves_a_live_training_job_alone(trained_study, settings):
    study, _, _ = trained_study
    settings.CHORUS_TRAINING_STALE_SECONDS = 30
    live = _stuck(study, status="training", ago=5)
    assert recovery.training_sweep().taken_over == 0
    live.refresh_from_db()
    assert (live.status, live.attempts) == ("training", 1)


def test_it_gives_up_on_a_job_that_killed_its_workers_too_often(trained_study, settings):
    study, _, _ = trained_study
    settings.CHORUS_TRAINING_STALE_SECONDS = 30
    settings.CHORUS_TRAINING_MAX_ATTEMPTS = 3
    doomed = _stuck(study, status="training", ago=60, attempts=3)
    assert recovery.training_sweep().failed == 1
    doomed.refresh_from_db()
    assert doomed.status == "failed" and "3 attempts" in doomed.error
    # and the study can be retrained again (the automatic rule skips a study only while a job is pending)
    assert services.model_version_request(study=study, kind="bt").pk != doomed.pk


@pytest.mark.parametrize("enqueued, ago, resent", [(False, 0, True), (True, 301, True), (True, 10, False)])
def test_it_resends_queued_jobs_whose_message_was_lost(trained_study, settings, enqueued, ago, resent):
    study, _, _ = trained_study
    settings.CHORUS_TRAINING_REQUEUE_SECONDS = 300
    version = _stuck(study, status="queued", ago=ago, attempts=0, enqueued=enqueued)
    assert recovery.training_sweep().resent == int(resent)
    version.refresh_from_db()
    assert (version.status in ("active", "ready")) == resent, version.error
    assert version.status == "queued" or resent


def test_it_catches_up_posteriors_that_missed_their_update(trained_study, settings, monkeypatch):
    study, annotators, version = trained_study
    settings.CHORUS_POSTERIOR_LAG_SECONDS = 60
    ann = annotators[1]
    recovery.training_sweep()  # nothing lags yet
    before = AnnotatorPosterior.objects.get(annotator=ann, model_version=version)
    # Two judgments whose per-judgment task never ran (the broker was down) ...
    monkeypatch.setattr(feedback_services, "judgment_created_hooks", [])
    missed = []
    for key in ("lost-1", "lost-2"):
        assignment = feedback_services.assignment_next(annotator=ann)
        judgment, _ = feedback_services.judgment_create(annotator=ann, pair=assignment.pair, choice="a",
                                                        client_key=key)
        missed.append(judgment.pk)
    # ... are left to the normal path while young, and caught up by the sweep once older than the lag.
    assert recovery.training_sweep().annotators == 0
    Judgment.objects.filter(pk__in=missed).update(created_at=timezone.now() - timedelta(seconds=61))
    assert recovery.training_sweep().annotators == 1
    after = AnnotatorPosterior.objects.get(annotator=ann, model_version=version)
    assert after.last_judgment_id == max(missed)
    assert after.n_predicted == before.n_predicted + 2
    # Caught up: the next sweep has nothing to do, and a trailing tie (never folded in) does not count as lag.
    assignment = feedback_services.assignment_next(annotator=ann)
    tie, _ = feedback_services.judgment_create(annotator=ann, pair=assignment.pair, choice="tie", client_key="t")
    Judgment.objects.filter(pk=tie.pk).update(created_at=timezone.now() - timedelta(seconds=61))
    assert recovery.training_sweep().annotators == 0


def test_the_beat_schedule_runs_the_sweep(settings):
    from config.celery import app
    from training.tasks import training_sweep

    entry = settings.CELERY_BEAT_SCHEDULE["training-sweep"]
    assert entry["task"] == training_sweep.name and entry["task"] in app.tasks
    assert entry["schedule"] == settings.CHORUS_SWEEP_SECONDS
