"""The request-body cap in front of the ASGI app (config.limits.BodySizeLimit) and the WSGI app."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

GIGABYTE = 1024**3


def _post(app, path: str, chunks: list[bytes], *, content_length: int | None, extra: int = 0):
    """POST `chunks` (plus `extra` more chunks the app may ask for); returns (status, body, chunks the app read)."""
    headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }
    read = 0

    async def go():
        nonlocal read
        queue: asyncio.Queue = asyncio.Queue()
        for i, chunk in enumerate(chunks):
            await queue.put({"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or extra > 0})

        async def receive():
            nonlocal read
            message = await queue.get()
            read += 1
            return message

        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), 20)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], body

    with ThreadPoolExecutor(max_workers=1) as pool:
        status, body = pool.submit(asyncio.run, go()).result()
    return status, body, read


@pytest.mark.django_db(transaction=True)
def test_it_refuses_an_anonymous_gigabyte_to_join_before_reading_it(study):
    from config.asgi import application

    status, body, read = _post(application, f"/api/v1/studies/{study.pk}/join/", [b"{"], content_length=GIGABYTE)
    assert status == 413
    assert read == 0  # not one byte of the body was read
    data = json.loads(body)
    assert data["detail"] == "request body too large" and "body" in data["errors"]


@pytest.mark.django_db(transaction=True)
def test_it_stops_reading_a_body_without_a_length_once_it_passes_the_cap(study, settings):
    from config.asgi import application

    settings.CHORUS_MAX_REQUEST_BYTES = 100_000
    chunks = [b"x" * 10_000] * 50  # 500 kB offered, chunked
    status, _, read = _post(application, f"/api/v1/studies/{study.pk}/join/", chunks, content_length=None)
    assert status == 413
    assert read <= 11  # stopped just past 100 kB


@pytest.mark.django_db(transaction=True)
def test_it_lets_imports_be_larger_than_other_requests(settings):
    from config.limits import body_limit

    settings.CHORUS_MAX_REQUEST_BYTES = 1000
    settings.CHORUS_IMPORT_MAX_UPLOAD_BYTES = 10_000_000
    assert body_limit("/api/v1/studies/3/import/") > 10_000_000
    assert body_limit("/studies/3/import") > 10_000_000
    assert body_limit("/api/v1/studies/3/join/") == 1000


@pytest.mark.django_db(transaction=True)
def test_it_serves_a_small_body_normally(study):
    from config.asgi import application

    body = json.dumps({"external_id": "ASGI-1"}).encode()
    status, data, _ = _post(application, f"/api/v1/studies/{study.pk}/join/", [body], content_length=len(body))
    assert status == 201 and json.loads(data)["resume_token"]


# --- the same cap in front of the WSGI app (config/wsgi.py, HTTP under gunicorn) -------------------------


class _Inner:
    def __init__(self):
        self.bodies: list[bytes] = []

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.bodies.append(environ["wsgi.input"].read(length))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


class _Stream:
    """A request body that counts what is read of it."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.read_bytes if n < 0 else min(n, self.size - self.read_bytes)
        self.read_bytes += n
        return b"x" * n


def _wsgi_post(app, path: str, stream, content_length: str | None, chunked: bool = False):
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "wsgi.input": stream}
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    got = {}

    def start_response(status, headers):
        got["status"], got["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return got["status"], got["headers"], body


@pytest.mark.parametrize("declared", [str(GIGABYTE), "12x"])
def test_it_refuses_a_declared_oversized_wsgi_body_before_reading_it(declared):
    from config.limits import WSGIBodySizeLimit

    inner, stream = _Inner(), _Stream(10)
    status, headers, body = _wsgi_post(WSGIBodySizeLimit(inner), "/api/v1/studies/3/join/", stream, declared)
    assert status.startswith("413") and headers["Content-Type"] == "application/json"
    assert json.loads(body)["detail"] == "request body too large"
    assert inner.bodies == [] and stream.read_bytes == 0


def test_it_reads_a_chunked_wsgi_body_only_one_byte_past_the_limit():
    from config.limits import WSGIBodySizeLimit, body_limit

    limit = body_limit("/studies/3/join/")
    inner, stream = _Inner(), _Stream(GIGABYTE)
    status, headers, body = _wsgi_post(WSGIBodySizeLimit(inner), "/studies/3/join/", stream, None, chunked=True)
    assert status.startswith("413") and headers["Content-Type"].startswith("text/plain")
    assert stream.read_bytes == limit + 1 and inner.bodies == []
    small = _Stream(limit)  # at the limit: passed on whole, with its length
    status, _headers, body = _wsgi_post(WSGIBodySizeLimit(inner), "/studies/3/join/", small, None, chunked=True)
    assert status.startswith("200") and inner.bodies == [b"x" * limit]


@pytest.mark.django_db
def test_the_wsgi_app_serves_the_api_behind_the_cap(settings):
    from io import BytesIO

    from config.wsgi import application

    settings.CHORUS_MAX_REQUEST_BYTES = 1000
    base = {"SERVER_NAME": "testserver", "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "testserver",
            "CONTENT_TYPE": "application/json"}
    got: dict = {}

    def call(method: str, path: str, body: bytes) -> bytes:
        environ = {**base, "REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": BytesIO(body),
                   "CONTENT_LENGTH": str(len(body))}
        return b"".join(application(environ, lambda status, headers: got.update(status=status)))

    assert json.loads(call("POST", "/api/v1/studies/3/join/", b"{}" * 600))["detail"] == "request body too large"
    assert got["status"].startswith("413")
    call("GET", "/api/v1/me/", b"")
    assert got["status"].startswith("401")  # Django behind it answers as usual
