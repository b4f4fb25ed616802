"""Settings for `benchmarks/gpu_check.sh`: a self-contained deployment in one folder, no services needed.

A lent GPU machine has no PostgreSQL or Redis, so the check runs the real web-side code and a real Celery
`gpu` worker process against SQLite (WAL) and kombu's filesystem transport, all under GPU_CHECK_DIR.
Never use these settings for anything else.
"""

import os
from pathlib import Path
from typing import Any

from config.settings.base import *  # noqa: F403
from config.settings.base import env_bool

_DIR = Path(os.environ.get("GPU_CHECK_DIR", "var/gpu-check")).resolve()

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_DIR / "chorus.sqlite3"),
        # Two processes write (this one and the worker): WAL and a long busy timeout.
        "OPTIONS": {
            "timeout": 60,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
ARTIFACTS_DIR = _DIR / "artifacts"
MEDIA_ROOT = _DIR / "media"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# A real broker without a server: messages are files the worker process picks up.
CELERY_BROKER_URL = "filesystem://"
# (base declares it dict[str, int]: a visibility timeout; the filesystem transport takes folder names)
_BROKER_OPTIONS: dict[str, Any] = {
    "data_folder_in": str(_DIR / "broker"),
    "data_folder_out": str(_DIR / "broker"),
    "processed_folder": str(_DIR / "broker-processed"),
    # kombu's default is ./control, i.e. wherever the process was started (it once landed in the repo)
    "control_folder": str(_DIR / "broker-control"),
    "store_processed": False,
}
CELERY_BROKER_TRANSPORT_OPTIONS = _BROKER_OPTIONS
# Seeding runs eagerly (GPU_CHECK_EAGER=1); the timed retrain goes through the worker.
CELERY_TASK_ALWAYS_EAGER = env_bool("GPU_CHECK_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = CELERY_TASK_ALWAYS_EAGER
CHORUS_EMBED_ON_IMPORT = False
