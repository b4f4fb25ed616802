"""How the feedback app's writes reach training: enqueue after commit, never block the request.

A broker outage must not lose or fail a judgment: enqueue errors are logged, and the next update
for that annotator catches up on everything (posterior_update folds in all newer judgments).
"""

from __future__ import annotations

import logging

from feedback.models import Judgment, Study

log = logging.getLogger(__name__)


def on_judgment_created(judgment: Judgment) -> None:
    from feedback.realtime import send_event, study_group
    from training.broker import publish_soon
    from training.tasks import judgment_recorded

    study_id, annotator_id, pk = judgment.pair.study_id, judgment.annotator_id, judgment.pk
    # Live dashboards refresh on this; the payload is tiny and carries no annotator data.
    send_event(study_group(study_id), "judgment", {"pair_id": judgment.pair_id})
    try:
        # One broker publish per judgment (the task updates the posterior, then checks retraining), sent from
        # the process's publishing thread (training.broker.publish_soon says why). A down broker costs
        # nothing here (the circuit breaker); the sweep catches the posterior up.
        publish_soon(lambda: judgment_recorded.delay(annotator_id, study_id), what=f"judgment {pk}",
                     on_failure=lambda: log.warning("could not enqueue training for judgment %s; it will catch up", pk))
    except Exception:  # in-process (eager) mode: a failing task must not fail the saved judgment
        log.warning("could not enqueue training for judgment %s; it will catch up", pk, exc_info=True)


def on_study_imported(study: Study) -> None:
    from django.conf import settings

    from training.tasks import embed_study_texts

    if not settings.CHORUS_EMBED_ON_IMPORT:
        return
    from training.broker import publish

    try:
        sent = publish(lambda: embed_study_texts.delay(study.pk), what=f"embedding of study {study.pk}")
    except Exception:  # in-process (eager) mode
        sent = False
    if not sent:
        log.warning("could not enqueue embedding of study %s", study.pk)
