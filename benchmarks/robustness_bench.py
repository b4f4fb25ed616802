"""Robustness figures (issue 16): what a down broker costs per enqueue, and import memory against file size.

1. Broker outage: the time one enqueue takes with nothing listening on the broker's port, Celery's default
   publish policy (retries on, what the web tier did before) against training.broker.publish (short
   connect timeout, no retries, then a circuit breaker that skips the broker).
2. Import memory: tracemalloc peak of validating a JSONL file as a stream (feedback.importers.validate_import,
   what the import service does before it stores in batches) against parsing it whole into a list of rows
   (feedback.importers.parse_import: every parsed row held at once, as the old import path did; it also held
   the whole decoded text, not counted here).

    DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python benchmarks/robustness_bench.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django  # noqa: E402

django.setup()

from config.celery import app  # noqa: E402
from feedback.importers import parse_import, validate_import  # noqa: E402
from training import broker  # noqa: E402
from training.tasks import update_annotator_posterior  # noqa: E402

DEAD = "redis://127.0.0.1:1/15"


def _dead_broker() -> None:
    app.conf.task_always_eager = False
    app.conf.broker_url = DEAD
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None


def broker_outage(n: int) -> dict[str, float]:
    _dead_broker()
    update_annotator_posterior.delay  # noqa: B018  (imports done before timing)
    broker.circuit.reset()
    started = time.perf_counter()
    broker.publish(lambda: update_annotator_posterior.delay(1), what="bench")
    first = time.perf_counter() - started
    after = []
    for _ in range(n):
        started = time.perf_counter()
        broker.publish(lambda: update_annotator_posterior.delay(1), what="bench")
        after.append(time.perf_counter() - started)
    before = []
    for _ in range(5):  # Celery's default publish policy: retries with back-off before it gives up
        _dead_broker()
        started = time.perf_counter()
        try:
            update_annotator_posterior.apply_async((1,), retry=True, retry_policy={
                "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2})
        except Exception:
            pass
        before.append(time.perf_counter() - started)
    return {
        "default_policy_median_ms": 1000 * statistics.median(before),
        "publish_first_ms": 1000 * first,
        "publish_circuit_open_median_us": 1e6 * statistics.median(after),
    }


def _rows(n: int, text_chars: int) -> bytes:
    return "".join(
        json.dumps({"prompt": f"prompt {i} " + "x" * text_chars, "chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n"
        for i in range(n)
    ).encode()


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def import_memory(n: int, text_chars: int) -> dict[str, float]:
    data = _rows(n, text_chars)
    streamed = _peak(lambda: validate_import(io.BytesIO(data), "bench.jsonl"))
    whole = _peak(lambda: parse_import(data, "bench.jsonl"))
    return {"file_mb": len(data) / 1e6, "stream_peak_mb": streamed / 1e6, "whole_peak_mb": whole / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--publishes", type=int, default=1000)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--text-chars", type=int, default=1500)
    args = p.parse_args()
    print(json.dumps({"broker_outage": broker_outage(args.publishes),
                      "import_memory": import_memory(args.rows, args.text_chars)}, indent=2))


if __name__ == "__main__":
    main()
