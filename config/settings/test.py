"""The test suite runs on the real services: PostgreSQL and Redis (see scripts/ensure-services.sh).

TEST_DATABASE_URL / TEST_REDIS_URL override the local defaults.
"""

import os

import dj_database_url

from config.settings.base import *  # noqa: F403

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chorus")
    )
}
# One test database per pytest process, so parallel runs on one machine never collide.
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("CHORUS_TEST_DB_NAME", f"test_chorus_{os.getpid()}")}
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
# Unit and integration tests run tasks in-process; tests marked `worker` start a real worker on Redis.
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ARTIFACTS_DIR = BASE_DIR / "var" / "test-artifacts" / str(os.getpid())  # noqa: F405  # one per test process
DEBUG = False
# Training reacts only where a test asks for it (those tests override these).
CHORUS_EMBED_ON_IMPORT = False
CHORUS_RETRAIN_MIN_JUDGMENTS = 10**9
CHORUS_RETRAIN_EVERY_JUDGMENTS = 10**9
# No background warm-up thread loading the encoder during tests (tests/training/test_warmup.py calls it).
CHORUS_WARM_ON_FIRST_REQUEST = False

# --- Real-worker tests (tests/training/test_worker.py) ------------------------------------------------
# The worker those tests start runs with these settings plus env overrides: CHORUS_TEST_EAGER=0 makes it
# (and only it) use the Redis broker for real; TEST_DATABASE_URL points it at the test's own database.
# CELERY_VISIBILITY_TIMEOUT / CHORUS_TRAINING_STALE_SECONDS are short there so a killed worker's task comes
# back within seconds; CHORUS_FIT_EPOCHS shortens training (0 = the FitConfig default). A worker that must be
# killed mid-fit runs the app of tests/training/slow_worker.py, which stretches every fit.
CELERY_BROKER_TRANSPORT_OPTIONS = {  # noqa: F405
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),  # noqa: F405
    **BROKER_FAIL_FAST_OPTIONS,  # noqa: F405
}
if os.environ.get("CHORUS_TEST_EAGER", "1") == "0":
    CELERY_TASK_ALWAYS_EAGER = False
    CELERY_TASK_EAGER_PROPAGATES = False
    # kombu sweeps for messages whose visibility timeout ran out only every interval × throttle seconds
    # (10 × 10 by default): sweep every second so a dead worker's task comes back within the test.
    CELERY_BROKER_TRANSPORT_OPTIONS |= {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}
# Worker tests of parallel pytest runs share Redis db 15: each run prefixes its broker keys (queues, unacked
# messages) so no run consumes or purges another's messages (tests/training/test_worker.py sets it).
if os.environ.get("CHORUS_TEST_BROKER_PREFIX"):
    CELERY_BROKER_TRANSPORT_OPTIONS |= {"global_keyprefix": os.environ["CHORUS_TEST_BROKER_PREFIX"]}
CHORUS_TRAINING_STALE_SECONDS = env_int("CHORUS_TRAINING_STALE_SECONDS", 600)  # noqa: F405
CHORUS_FIT_EPOCHS = env_int("CHORUS_FIT_EPOCHS", 0)  # noqa: F405
