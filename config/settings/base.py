"""Settings shared by every environment; everything deployment-specific comes from env vars.

The embedded default (no env vars) is SQLite, tasks run in-process and an in-memory channel layer,
so `make demo` needs no other service. Set DATABASE_URL / REDIS_URL to scale out.
"""

import os
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


# Public, for development and tests only: config.settings.production refuses it (and empty or weak keys).
DEV_SECRET_KEY = "insecure-dev-key-change-me-in-production-0123456789"
SECRET_KEY = os.environ.get("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]
# Absolute base for links we print or hand to crowd platforms (join links).
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    # daphne first: its runserver serves the ASGI application (HTTP + websockets).
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "csp",
    "django_htmx",
    "template_partials",
    "feedback",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.limits.RejectUnstorableInput",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

# Content-Security-Policy (django-csp): scripts only from our own static files (or a per-response nonce for
# a page's small inline script), no plugins, no framing, forms post only here. Styles may be inline (Plotly
# and Swagger UI set them). Enforced everywhere, so the browser tests see what production sees.
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'chorus.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the in-process worker and the web server write without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "var" / "media"))
# Trained models and per-user artifacts live here (a shared volume when workers run elsewhere).
ARTIFACTS_DIR = Path(os.environ.get("ARTIFACTS_DIR", BASE_DIR / "var" / "artifacts"))

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/studies/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REDIS_URL = os.environ.get("REDIS_URL", "")

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: a broker from env; without one, tasks run in-process (the embedded default).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not (REDIS_URL or os.environ.get("CELERY_BROKER_URL")))
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_DEFAULT_QUEUE = "default"
# Embedding and global retraining need a GPU box; per-user updates are cheap and stay on "default".
CELERY_TASK_ROUTES = {
    "training.tasks.embed_study_texts": {"queue": "gpu"},
    "training.tasks.retrain_study_model": {"queue": "gpu"},
}
# A task is acknowledged only after it finishes, so a worker killed mid-task hands it to another worker.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Fail fast when the broker is down: the web tier publishes inside requests, and a judgment must never wait
# on a dead broker (a short connect timeout, one attempt, then training.broker's circuit breaker skips it).
CELERY_BROKER_CONNECTION_TIMEOUT = float(os.environ.get("CELERY_BROKER_CONNECTION_TIMEOUT", "1"))
CELERY_TASK_PUBLISH_RETRY = False
# max_retries 0: kombu's default channel otherwise keeps retrying the connection for the whole connect
# timeout before a publish fails (~0.7 s per judgment measured, BENCHMARKS.md "Broker outage"). Workers
# reconnect with their own retry policy (broker_connection_retry), which these options do not change.
BROKER_FAIL_FAST_OPTIONS: dict[str, Any] = {"socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT, "max_retries": 0}
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    **BROKER_FAIL_FAST_OPTIONS,
}
# After a failed publish, skip publishing for this long (per process); the sweep catches up afterwards.
CHORUS_BROKER_CIRCUIT_SECONDS = env_int("CHORUS_BROKER_CIRCUIT_SECONDS", 15)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "feedback.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Every API error, on every endpoint (exports, dashboard, downloads too): {"detail": ..., "errors": {...}}.
    "EXCEPTION_HANDLER": "feedback.api_errors.api_exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chorus API",
    "DESCRIPTION": "Collect pairwise human feedback and learn personalized reward models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets come from the sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two models have a `Status` enum; give each its own schema name.
    "ENUM_NAME_OVERRIDES": {
        "StudyStatusEnum": "feedback.models.Study.Status",
        "ModelVersionStatusEnum": "training.models.ModelVersion.Status",
    },
}

# Import limits: a file is validated whole before anything is stored.
CHORUS_IMPORT_MAX_BYTES = env_int("CHORUS_IMPORT_MAX_BYTES", 200 * 1024 * 1024)  # uncompressed
CHORUS_IMPORT_MAX_ROWS = env_int("CHORUS_IMPORT_MAX_ROWS", 200_000)
CHORUS_IMPORT_MAX_TEXT_CHARS = env_int("CHORUS_IMPORT_MAX_TEXT_CHARS", 2_000_000)
CHORUS_IMPORT_MAX_RESPONSES = env_int("CHORUS_IMPORT_MAX_RESPONSES", 12)
CHORUS_IMPORT_MAX_LINE_BYTES = env_int("CHORUS_IMPORT_MAX_LINE_BYTES", 16 * 1024 * 1024)
# An assignment nobody judged within this many seconds goes back to the pool.
CHORUS_ASSIGNMENT_TTL_SECONDS = env_int("CHORUS_ASSIGNMENT_TTL_SECONDS", 30 * 60)
# Request bodies: non-file form data is held in memory up to this size (then 400); uploaded files larger
# than FILE_UPLOAD_MAX_MEMORY_SIZE go to a temporary file, never to memory. config.asgi's body cap refuses
# anything larger than CHORUS_MAX_REQUEST_BYTES (imports: CHORUS_IMPORT_MAX_UPLOAD_BYTES) with 413 before
# it is read, by Content-Length or by counting a body sent without one.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
CHORUS_MAX_REQUEST_BYTES = env_int("CHORUS_MAX_REQUEST_BYTES", 4 * 1024 * 1024)
# The largest (possibly compressed) import file accepted; the uncompressed size is capped again while reading.
CHORUS_IMPORT_MAX_UPLOAD_BYTES = env_int("CHORUS_IMPORT_MAX_UPLOAD_BYTES", 100 * 1024 * 1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # httpx logs every model-endpoint request at INFO (live conversations): warnings only.
    "loggers": {"httpx": {"level": "WARNING"}},
}

# Text encoder for reward models: None = all-MiniLM-L6-v2 from the PyPI package; else a local folder.
CHORUS_ENCODER_PATH = os.environ.get("CHORUS_ENCODER_PATH", "")
CHORUS_ENCODER_DEVICE = os.environ.get("CHORUS_ENCODER_DEVICE", "auto")
CHORUS_ENCODER_BATCH_SIZE = env_int("CHORUS_ENCODER_BATCH_SIZE", 64)
# Global retraining: after this many new judgments, or this many minutes with any new judgment.
CHORUS_RETRAIN_EVERY_JUDGMENTS = env_int("CHORUS_RETRAIN_EVERY_JUDGMENTS", 200)
# Most user types in the mixture-of-types prior over the latent; 0 = always a single Gaussian prior.
# Off in the app by default: its keep-or-refuse check scores the training users in-sample, and in the
# app-level simulation (96 warm-up annotators) it once kept a mixture that cost profiled newcomers up to
# 4 points at their first labels (BENCHMARKS.md). The library/CLI default (FitConfig) stays 6.
CHORUS_MIXTURE_MAX_K = env_int("CHORUS_MIXTURE_MAX_K", 0)
CHORUS_RETRAIN_EVERY_MINUTES = env_int("CHORUS_RETRAIN_EVERY_MINUTES", 30)
CHORUS_RETRAIN_MIN_JUDGMENTS = env_int("CHORUS_RETRAIN_MIN_JUDGMENTS", 20)
# Share of judgments held out to evaluate a candidate model before it may become active.
CHORUS_HELDOUT_FRACTION = float(os.environ.get("CHORUS_HELDOUT_FRACTION", "0.2"))
# A training job whose heartbeat is older than this is considered dead and may be claimed again.
CHORUS_TRAINING_STALE_SECONDS = env_int("CHORUS_TRAINING_STALE_SECONDS", 600)

# The recovery sweep (training.recovery): re-sends queued training jobs whose message was lost (sent longer
# than CHORUS_TRAINING_REQUEUE_SECONDS ago, or never), takes over jobs whose heartbeat is older than
# CHORUS_TRAINING_STALE_SECONDS, and updates annotators whose posterior lags their judgments.
CHORUS_SWEEP_SECONDS = float(os.environ.get("CHORUS_SWEEP_SECONDS", "30"))
CHORUS_TRAINING_REQUEUE_SECONDS = env_int("CHORUS_TRAINING_REQUEUE_SECONDS", 300)
# A job whose worker died this many times is marked failed instead of being handed to the next worker.
CHORUS_TRAINING_MAX_ATTEMPTS = env_int("CHORUS_TRAINING_MAX_ATTEMPTS", 3)
# Judgments younger than this are left to the normal per-judgment task before the sweep steps in.
CHORUS_POSTERIOR_LAG_SECONDS = env_int("CHORUS_POSTERIOR_LAG_SECONDS", 60)
CHORUS_SWEEP_MAX_ANNOTATORS = env_int("CHORUS_SWEEP_MAX_ANNOTATORS", 500)

CELERY_BEAT_SCHEDULE = {
    "retrain-due-studies": {"task": "training.tasks.retrain_due_studies", "schedule": 60.0},
    # A sweep that waited longer than one interval (the worker was busy) is dropped: the next one is coming.
    "training-sweep": {
        "task": "training.tasks.training_sweep",
        "schedule": CHORUS_SWEEP_SECONDS,
        "options": {"expires": CHORUS_SWEEP_SECONDS},
    },
}
# Active learning "mixed" selector: share of next pairs drawn overlap-balanced at random.
CHORUS_AL_RANDOM_SHARE = float(os.environ.get("CHORUS_AL_RANDOM_SHARE", "0.2"))
# Embed a study's texts right after import (on the gpu queue); tests turn this off for speed.
CHORUS_EMBED_ON_IMPORT = env_bool("CHORUS_EMBED_ON_IMPORT", True)
# A per-participant resume link (researchers hand it out) works once, within this many seconds.
CHORUS_RESUME_LINK_MAX_AGE_SECONDS = env_int("CHORUS_RESUME_LINK_MAX_AGE_SECONDS", 7 * 24 * 3600)
# The browser keeps its resume secret in a signed cookie this long (the session may expire sooner).
CHORUS_RESUME_COOKIE_MAX_AGE_SECONDS = env_int("CHORUS_RESUME_COOKIE_MAX_AGE_SECONDS", 30 * 24 * 3600)
# Load the encoder and active models in a background thread on a web process's first request (training.warmup).
CHORUS_WARM_ON_FIRST_REQUEST = env_bool("CHORUS_WARM_ON_FIRST_REQUEST", True)

# Live conversations (issue 12): OpenAI-compatible model endpoints. Seconds.
CHORUS_LLM_CONNECT_TIMEOUT = float(os.environ.get("CHORUS_LLM_CONNECT_TIMEOUT", "5"))
CHORUS_LLM_READ_TIMEOUT = float(os.environ.get("CHORUS_LLM_READ_TIMEOUT", "60"))  # longest silence mid-answer
CHORUS_LLM_TOTAL_TIMEOUT = float(os.environ.get("CHORUS_LLM_TOTAL_TIMEOUT", "180"))  # whole answer
# Where `make demo` runs its local model server (python -m feedback.llm_dev_server).
CHORUS_DEMO_LLM_URL = os.environ.get("CHORUS_DEMO_LLM_URL", "http://127.0.0.1:8001/v1")
