"""The request-body cap in front of the ASGI app (config.limits.BodySizeLimit)."""

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
