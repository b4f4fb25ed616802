"""Production: everything from env vars; refuses to start without a real secret and database."""

import os

from config.settings.base import *  # noqa: F403

DEBUG = False
if "SECRET_KEY" not in os.environ:
    raise RuntimeError("SECRET_KEY must be set in production")
if "DATABASE_URL" not in os.environ:
    raise RuntimeError("DATABASE_URL must be set in production")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)  # noqa: F405
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)  # noqa: F405
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
