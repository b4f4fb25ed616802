import os

# A deployment entry point: without DJANGO_SETTINGS_MODULE it runs the production settings, which refuse to
# start without a real SECRET_KEY, DATABASE_URL and ALLOWED_HOSTS (never the public development key).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from config.asgi_handler import get_asgi_application  # noqa: E402

# Django must be set up before anything imports models (consumers, routing). The handler runs the
# middleware chain and the (sync) view in one worker-thread hop per request: see config/asgi_handler.py.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.limits import BodySizeLimit  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Oversized bodies are refused (413) before Django reads them: see config/limits.py.
        "http": BodySizeLimit(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
