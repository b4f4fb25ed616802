"""The Celery app of the test workers that must be killed mid-fit (tests/training/test_worker.py).

    celery -A tests.training.slow_worker worker ...

It is config.celery's app with training.services._fit stretched by SLOW_FIT_SECONDS, patched in the worker
process before it takes a task, so the services carry no test-only switch. The patched fit still trains
(after the sleep): a worker that is not killed finishes the job normally.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

from config.celery import app

__all__ = ("app",)

SLOW_FIT_SECONDS = 60.0


@signals.worker_init.connect
def _slow_fit(**_: Any) -> None:
    import django

    django.setup()  # idempotent; the models must be loaded before training.services is imported
    from training import services

    real_fit = services._fit

    def slow_fit(*args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW_FIT_SECONDS)
        return real_fit(*args, **kwargs)

    services._fit = slow_fit  # type: ignore[assignment]
    logging.getLogger(__name__).warning("test worker: every fit sleeps %.0f s first", SLOW_FIT_SECONDS)
