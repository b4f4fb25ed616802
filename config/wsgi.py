"""WSGI entry point for HTTP (gunicorn): websockets need the ASGI app (config/asgi.py) beside it."""

import os

# As config/asgi.py: without DJANGO_SETTINGS_MODULE it runs the production settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from django.core.wsgi import get_wsgi_application  # noqa: E402

from config.limits import WSGIBodySizeLimit  # noqa: E402

# Oversized bodies are refused (413) before Django reads them, as the ASGI app does (config/limits.py).
application = WSGIBodySizeLimit(get_wsgi_application())
