"""Publishing to the Celery broker without letting a broker outage slow or break the web tier.

Every enqueue from a request goes through `publish`. The broker connection itself fails fast (short
connect/socket timeouts, no publish retries: config.settings.base), and a small per-process circuit breaker
remembers a failure for CHORUS_BROKER_CIRCUIT_SECONDS: during that window `publish` returns at once without
touching the network, so a down broker costs a judgment nothing. Nothing is lost by skipping a publish: the
periodic sweep (training.recovery) re-sends queued training jobs and catches up lagging posteriors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import current_app
from django.conf import settings

log = logging.getLogger(__name__)


class _Circuit:
    """Open (skip publishing) for a while after a failure; the first publish after that window probes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0
        self.last_error = ""

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self, exc: BaseException) -> None:
        with self._lock:
            self._open_until = time.monotonic() + settings.CHORUS_BROKER_CIRCUIT_SECONDS
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self.last_error = ""


circuit = _Circuit()


def broker_down() -> bool:
    """True while this process saw the broker fail recently (pages say so instead of erroring)."""
    return circuit.is_open()


def publish(send: Callable[[], Any], *, what: str) -> bool:
    """Run `send` (a task's .delay / .apply_async); False when the broker is down (logged, never raised)."""
    eager = current_app.conf.task_always_eager  # in-process mode: no broker, nothing to trip
    if not eager and circuit.is_open():
        log.info("broker circuit open; not sending %s (the sweep will catch up)", what)
        return False
    try:
        send()
    except Exception as exc:
        if eager:  # the task itself failed in-process; it is the task's business, not the broker's
            log.warning("in-process task for %s failed", what, exc_info=True)
            return False
        circuit.trip(exc)
        log.warning("could not enqueue %s; broker circuit open for %ss", what,
                    settings.CHORUS_BROKER_CIRCUIT_SECONDS, exc_info=True)
        return False
    return True
