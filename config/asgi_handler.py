"""Django's ASGI handler with the middleware chain built in sync mode and entered in one thread hop.

Every HTTP view in Chorus is sync (DRF views, form views), and so is most middleware (MiddlewareMixin,
whitenoise). Django's stock ASGIHandler builds the chain in async mode, so under ASGI each request hopped
between the event loop and its worker thread about a dozen times: once per MiddlewareMixin
process_request/process_view/process_response, again around whitenoise (sync only) and again for the view.
Each hop is a future, a thread wake-up and a context copy; measured under load they were the largest single
CPU cost of an API call (see BENCHMARKS.md, "Annotation loop load test").

Here the chain is built exactly as under WSGI (same middleware, same order, all in sync mode) and the whole
of it — middleware and view — runs in ONE `sync_to_async(thread_sensitive=True)` call, i.e. in the request's
own worker thread as before. Everything else (body reading, request_started/request_finished, streaming,
disconnects) is Django's ASGIHandler unchanged. Websockets never come here (Channels routes them).
"""

from __future__ import annotations

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self):
        # Not ASGIHandler.__init__, which loads the middleware in async mode.
        self.load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def get_asgi_application() -> SyncChainASGIHandler:
    """Like django.core.asgi.get_asgi_application(), with the sync-chain handler."""
    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
