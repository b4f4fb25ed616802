"""Settings shared by every environment; everything deployment-specific comes from env vars.

The embedded default (no env vars) is SQLite, tasks run in-process and an in-memory channel layer,
so `make demo` needs no other service. Set DATABASE_URL / REDIS_URL to scale out.
"""

import os
from pathlib import Path

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


SECRET_KEY = os.environ.get("SECRET_KEY", "insecure-dev-key-change-me-in-production-0123456789")
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
    "django_htmx",
    "template_partials",
    "feedback",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

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
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
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
# An assignment nobody judged within this many seconds goes back to the pool.
CHORUS_ASSIGNMENT_TTL_SECONDS = env_int("CHORUS_ASSIGNMENT_TTL_SECONDS", 30 * 60)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

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

CELERY_BEAT_SCHEDULE = {
    "retrain-due-studies": {"task": "training.tasks.retrain_due_studies", "schedule": 60.0},
}
# Active learning "mixed" selector: share of next pairs drawn overlap-balanced at random.
CHORUS_AL_RANDOM_SHARE = float(os.environ.get("CHORUS_AL_RANDOM_SHARE", "0.2"))
# Embed a study's texts right after import (on the gpu queue); tests turn this off for speed.
CHORUS_EMBED_ON_IMPORT = env_bool("CHORUS_EMBED_ON_IMPORT", True)

# Live conversations (issue 12): OpenAI-compatible model endpoints. Seconds.
CHORUS_LLM_CONNECT_TIMEOUT = float(os.environ.get("CHORUS_LLM_CONNECT_TIMEOUT", "5"))
CHORUS_LLM_READ_TIMEOUT = float(os.environ.get("CHORUS_LLM_READ_TIMEOUT", "60"))  # longest silence mid-answer
CHORUS_LLM_TOTAL_TIMEOUT = float(os.environ.get("CHORUS_LLM_TOTAL_TIMEOUT", "180"))  # whole answer
# Where `make demo` runs its local model server (python -m feedback.llm_dev_server).
CHORUS_DEMO_LLM_URL = os.environ.get("CHORUS_DEMO_LLM_URL", "http://127.0.0.1:8001/v1")
