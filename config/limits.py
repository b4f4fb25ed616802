"""Input limits in front of the views.

BodySizeLimit wraps the ASGI app (WSGIBodySizeLimit the WSGI app, the same rule): a body larger than the path's limit is refused with 413 before it is read
(by its Content-Length) or as soon as the bytes counted so far pass the limit (a body sent without one).
Django's ASGI handler would otherwise spool the whole body to disk first, for anonymous callers too.

RejectUnstorableInput (Django middleware) refuses query strings and HTML form fields that the database
cannot store (NUL, lone surrogates), with a 400 that says so, instead of a 500 from deep inside a view.
JSON bodies get the same rules in feedback.parsers.StrictJSONParser.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from feedback.validation import text_problem

_IMPORT_PATH = re.compile(r"^/(api/v1/)?studies/\d+/import/?$")


def body_limit(path: str) -> int:
    """Import uploads may be large; every other request body is small."""
    if _IMPORT_PATH.match(path):
        return settings.CHORUS_IMPORT_MAX_UPLOAD_BYTES + 64 * 1024  # the file plus its multipart framing
    return settings.CHORUS_MAX_REQUEST_BYTES


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _refuse(scope, send, limit)
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:  # Django reads the whole body before it answers, so this is the usual case
                await _refuse(scope, send, limit)


async def _refuse(scope, send, limit: int) -> None:
    body, content_type = _too_large(scope.get("path", ""), limit)
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


def _too_large(path: str, limit: int) -> tuple[bytes, bytes]:
    """The 413's body and content type: JSON under /api/, plain text elsewhere."""
    message = f"the request body is larger than {limit} bytes"
    if path.startswith("/api/"):
        return json.dumps({"detail": "request body too large", "errors": {"body": message}}).encode(), b"application/json"
    return f"Request body too large: {message}.".encode(), b"text/plain; charset=utf-8"


class WSGIBodySizeLimit:
    """BodySizeLimit for the WSGI app (config/wsgi.py, HTTP under gunicorn): a body larger than the path's
    limit is refused with the same 413 before Django reads it — by its Content-Length, or, sent without one
    (chunked), by reading at most one byte past the limit."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        limit = body_limit(path)
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared and (not declared.isdigit() or int(declared) > limit):
            return self._refuse(path, limit, start_response)
        if not declared and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return self._refuse(path, limit, start_response)
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(path: str, limit: int, start_response):
        body, content_type = _too_large(path, limit)
        start_response("413 Request Entity Too Large", [
            ("Content-Type", content_type.decode()), ("Content-Length", str(len(body))), ("Connection", "close")])
        return [body]


def _problems(request: HttpRequest) -> dict[str, str]:
    found: dict[str, str] = {}

    def check(where: str, data: Any) -> None:
        for key, values in data.lists():
            for value in [key, *values]:
                if isinstance(value, str) and (problem := text_problem(value)):
                    found[f"{where}.{key}" if text_problem(key) is None else where] = problem
                    return

    if problem := text_problem(request.path):
        found["path"] = problem
    check("query", request.GET)
    # Form bodies (url-encoded or multipart). Parsing here uses the default upload handlers, which the views
    # use too (files over FILE_UPLOAD_MAX_MEMORY_SIZE go to a temporary file); DRF reuses the parsed result.
    if request.method == "POST" and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        check("form", request.POST)
    return found


class RejectUnstorableInput:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        problems = _problems(request)
        if problems:
            where, problem = next(iter(problems.items()))
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": "invalid request", "errors": {k: v for k, v in problems.items()}},
                                    status=400)
            return HttpResponseBadRequest(f"A field of this form ({where}) {problem}. Please remove it and try again.",
                                          content_type="text/plain; charset=utf-8")
        return self.get_response(request)
