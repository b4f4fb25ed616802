"""Celery tasks: take ids, call a service, retry themselves.

Routing (settings.CELERY_TASK_ROUTES): embedding and retraining go to the `gpu` queue, per-user
updates stay on `default`. Tasks are acks_late, so a worker killed mid-task hands the message back.
"""

from __future__ import annotations

import functools

from celery import shared_task

from feedback.models import Annotator, Study
from training import embeddings, services
from training.broker import publish


@shared_task(bind=True, max_retries=5, default_retry_delay=30, acks_late=True)
def embed_study_texts(self, study_id: int) -> int:
    try:
        return embeddings.embed_study(study_id)
    except Exception as exc:  # transient DB / OOM: try again later, the store is idempotent
        raise self.retry(exc=exc) from exc


@shared_task(bind=True, max_retries=20, default_retry_delay=60, acks_late=True)
def retrain_study_model(self, model_version_id: int) -> str:
    try:
        return services.model_version_train(model_version_id=model_version_id).status
    except services.TrainingBusy as exc:
        # Another worker holds a fresh claim; if it dies its heartbeat goes stale and we take over.
        raise self.retry(exc=exc, countdown=services.stale_retry_seconds()) from exc


@shared_task(bind=True, max_retries=10, default_retry_delay=2, acks_late=True)
def update_annotator_posterior(self, annotator_id: int) -> int | None:
    try:
        state = services.posterior_update(annotator_id=annotator_id)
    except Annotator.DoesNotExist:
        return None
    except Exception as exc:
        raise self.retry(exc=exc) from exc
    return state.n_labels if state else None


# typing=False: no inspect.signature() check of the arguments on every .delay() in the web request.
@shared_task(acks_late=True, typing=False)
def judgment_recorded(annotator_id: int, study_id: int) -> None:
    """What the web tier enqueues per judgment: ONE message for the posterior update and the retrain check.

    The annotator's posterior is updated first; if that fails the update is handed to
    update_annotator_posterior, which retries on its own (it folds in every newer judgment, so nothing is
    lost). Then the study's retrain rule.
    """
    try:
        services.posterior_update(annotator_id=annotator_id)
    except Annotator.DoesNotExist:
        pass
    except Exception:
        publish(lambda: update_annotator_posterior.delay(annotator_id), what=f"posterior of {annotator_id}")
    maybe_retrain(study_id)


@shared_task(acks_late=True)
def refresh_study_posteriors(study_id: int) -> int:
    """After a new version becomes active, rebuild every annotator's posterior under it."""
    ids = list(Annotator.objects.filter(study_id=study_id, judgments__isnull=False).distinct().values_list("id", flat=True))
    for annotator_id in ids:
        if not publish(functools.partial(update_annotator_posterior.delay, annotator_id),
                       what=f"posterior of {annotator_id}"):
            break  # broker down: the sweep updates the rest once it is back
    return len(ids)


@shared_task(acks_late=True)
def maybe_retrain(study_id: int) -> int | None:
    study = Study.objects.filter(pk=study_id).first()
    version = services.retrain_if_due(study=study) if study else None
    return version.pk if version else None


@shared_task
def retrain_due_studies() -> int:
    """Beat: the T-minutes rule for every active study."""
    n = 0
    for study in Study.objects.filter(status=Study.Status.ACTIVE):
        if services.retrain_if_due(study=study):
            n += 1
    return n


@shared_task
def training_sweep() -> dict[str, int]:
    """Beat (every CHORUS_SWEEP_SECONDS): re-send lost training jobs, take over dead workers' jobs, catch up
    lagging posteriors (training.recovery)."""
    from training import recovery

    return recovery.training_sweep().as_dict()
