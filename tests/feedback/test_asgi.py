"""The ASGI entry point (config.asgi): the HTTP middleware chain runs in sync mode, in one thread hop."""

from __future__ import annotations

import asyncio
import inspect
import json
from concurrent.futures import ThreadPoolExecutor

from asgiref.testing import ApplicationCommunicator


def _get(app, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"accept", b"application/json")],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }

    async def go():
        comm = ApplicationCommunicator(app, scope)
        await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await comm.receive_output(10)
        body = await comm.receive_output(10)
        await comm.wait(10)
        return start["status"], {k.lower(): v for k, v in start["headers"]}, body["body"]

    # A fresh loop in its own thread: the browser tests' session-wide Playwright keeps an event loop
    # running in the main thread, where async_to_sync refuses to run.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, go()).result()


def test_it_builds_the_middleware_chain_in_sync_mode():
    from config.asgi import django_asgi_app
    from config.asgi_handler import SyncChainASGIHandler

    assert isinstance(django_asgi_app, SyncChainASGIHandler)
    # A sync chain: the outermost handler is a plain function, not a coroutine function.
    assert not inspect.iscoroutinefunction(django_asgi_app._middleware_chain)


def test_it_serves_the_api_through_every_middleware():
    from config.asgi import application

    status, headers, body = _get(application, "/api/v1/me/")
    assert status == 401
    assert json.loads(body)["detail"]
    assert headers[b"www-authenticate"] == b"Token"
    # SecurityMiddleware and XFrameOptionsMiddleware still ran.
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"x-frame-options"] == b"DENY"
