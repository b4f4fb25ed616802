"""Publishing to the Celery broker without letting a broker outage slow or break the web tier.

Every enqueue from a request goes through `publish`. The broker connection itself fails fast (short
connect/socket timeouts, no publish retries: config.settings.base), and a small per-process circuit breaker
remembers a failure for CHORUS_BROKER_CIRCUIT_SECONDS: during that window `publish` returns at once without
touching the network, so a down broker costs a judgment nothing. Nothing is lost by skipping a publish: the
periodic sweep (training.recovery) re-sends queued training jobs and catches up lagging posteriors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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


_sender: tuple[int, ThreadPoolExecutor] | None = None
_sender_lock = threading.Lock()


def _sending_thread() -> ThreadPoolExecutor:
    """This process's one publishing thread (made again in a forked child, which does not inherit it)."""
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid():
            _sender = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="chorus-publish"))
        return _sender[1]


def _publish_then(send: Callable[[], Any], what: str, on_failure: Callable[[], None] | None) -> bool:
    sent = publish(send, what=what)
    if not sent and on_failure is not None:
        on_failure()
    return sent


def publish_soon(send: Callable[[], Any], *, what: str,
                 on_failure: Callable[[], None] | None = None) -> Future[bool] | None:
    """``publish`` from this process's publishing thread, so that the request need not wait for it;
    ``on_failure`` runs there when it could not be sent.

    Why a thread of its own: under ASGI every request runs in a new thread, and Celery keeps its result
    backend and kombu their clients per thread, so a ``.delay()`` from a request's thread built them anew:
    2.4 ms of CPU against 1.1 ms from a thread that has sent before (the annotation loop's largest single
    cost, benchmarks/judgment_cpu_bench.py). A message not sent when the process dies is one the sweep
    catches up, exactly as after a broker outage (the judgment itself is already committed). In-process
    (eager) mode sends at once in the caller's thread, so the demo and the tests see the task's effect
    when the request returns. Returns the pending send (None when done at once)."""
    if current_app.conf.task_always_eager:
        _publish_then(send, what, on_failure)
        return None
    return _sending_thread().submit(_publish_then, send, what, on_failure)


def wait_published(timeout: float = 30.0) -> None:
    """Block until every ``publish_soon`` made so far by this process has been sent or given up."""
    _sending_thread().submit(lambda: None).result(timeout=timeout)
