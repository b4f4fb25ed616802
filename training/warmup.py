"""Warm the web process: load the text encoder, the active reward models and their pair pools once.

Without it the first judgment after the server starts pays for loading them (4.5 s measured on
`make demo`: transformers + the encoder weights, the model checkpoint, the active-learning pool). The
warm-up runs in a background thread on the web process's FIRST request (training.apps connects it
when CHORUS_WARM_ON_FIRST_REQUEST is on), so it never slows `manage.py` commands, Celery workers or
start-up itself, and that first request does not wait for it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import connection

log = logging.getLogger(__name__)
MAX_MODELS = 16  # the model cache (training.selectors._load_cached) holds this many
_started = threading.Lock()
_done = threading.Event()


def warm() -> dict[str, Any]:
    """Load what the first judgment needs; returns what was loaded and how long it took."""
    from feedback.models import Study
    from feedback.selection import SELECTORS
    from training.active_learning import pair_pool
    from training.embeddings import get_encoder
    from training.models import ModelVersion
    from training.selectors import load_version_model

    started = time.perf_counter()
    get_encoder().encode(["warm-up"])
    encoder_s = time.perf_counter() - started
    versions = (
        ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE, study__status=Study.Status.ACTIVE)
        .exclude(artifact_path="")
        .select_related("study")
        .order_by("-id")[:MAX_MODELS]
    )
    n_models = n_pools = 0
    for version in versions:
        try:
            load_version_model(version)
            n_models += 1
            if version.study.selector != "random" and version.study.selector in SELECTORS:
                pair_pool(version.study_id, version)
                n_pools += 1
        except Exception:  # a missing artifact must not stop the rest; the request path reports it
            log.warning("warm-up could not load model version %s", version.pk, exc_info=True)
    result = {"encoder_s": round(encoder_s, 3), "models": n_models, "pools": n_pools,
              "total_s": round(time.perf_counter() - started, 3)}
    log.info("warm-up done: %s", result)
    return result


def _run() -> None:
    try:
        warm()
    except Exception:
        log.warning("warm-up failed", exc_info=True)
    finally:
        connection.close()  # this thread's own connection
        _done.set()


def on_first_request(sender: Any = None, **kwargs: Any) -> None:
    """request_started receiver: start the warm-up thread once, then stop listening."""
    from django.core.signals import request_started

    if not _started.acquire(blocking=False):
        return
    request_started.disconnect(on_first_request, dispatch_uid=DISPATCH_UID)
    threading.Thread(target=_run, name="chorus-warm-up", daemon=True).start()


DISPATCH_UID = "chorus-warm-up"
