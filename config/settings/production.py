"""Production: everything from env vars; refuses to start without a real secret, database and host names.

config/asgi.py and config/celery.py default to this module, so a deployment that forgets
DJANGO_SETTINGS_MODULE fails at start with a message instead of running on the development key of
config.settings.base. `manage.py check --deploy` is clean with these settings (tests/config/test_production.py).
"""

import os

from config.settings.base import *  # noqa: F403
from config.settings.base import DEV_SECRET_KEY as _DEV_SECRET_KEY
from config.settings.base import env_bool, env_int


class ImproperlyConfiguredForProduction(RuntimeError):
    pass


def weak_secret_key_reason(key: str) -> str | None:
    """Why `key` must not sign sessions and resume links in production, or None (Django's own rule for
    security.W009, plus the development default)."""
    if not key.strip():
        return "SECRET_KEY is empty"
    if key == _DEV_SECRET_KEY or key.startswith("django-insecure-"):
        return "SECRET_KEY is the public development key"
    if len(key) < 50 or len(set(key)) < 5:
        return "SECRET_KEY is too weak: use at least 50 random characters (e.g. `python -c 'import secrets; " \
               "print(secrets.token_urlsafe(50))'`)"
    return None


DEBUG = False
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if reason := weak_secret_key_reason(SECRET_KEY):
    raise ImproperlyConfiguredForProduction(f"{reason}; set a strong SECRET_KEY in production")
if "DATABASE_URL" not in os.environ:
    raise ImproperlyConfiguredForProduction("DATABASE_URL must be set in production")
# Only the names the site is served under: no localhost / testserver defaults.
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
ALLOWED_HOSTS = [h for h in ALLOWED_HOSTS if h != "testserver"]
if not ALLOWED_HOSTS:
    raise ImproperlyConfiguredForProduction("ALLOWED_HOSTS must name the site's host(s) in production")

# HTTPS: redirect, HSTS and secure cookies, each on unless the environment turns it off (e.g. TLS is
# terminated by a proxy that already redirects: keep SECURE_PROXY_SSL_HEADER in step with it).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
