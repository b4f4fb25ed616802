"""Live-conversation streaming: what Chorus adds on top of the models' own latency.

Loopback only. Starts the tiny-model dev server (feedback.llm_dev_server) in-process and Chorus under daphne
(ASGI, as `manage.py runserver` serves it) on a throwaway SQLite database with the demo conversation study
(3 answers per first turn). Each round a fresh participant joins, consents, answers the profile and sends an
opening message to /talk/stream; we time the first streamed token and the final "done" event (all three
answers complete *and* stored). The baseline is the same three requests sent straight to the model server
at once (first token, all three complete). Reports medians over --rounds and the overhead.

    .venv/bin/python benchmarks/conversation_stream_bench.py --rounds 20 --tokens 40
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def chorus_round(base: str, message: str) -> tuple[float, float]:
    """(seconds to the first streamed token, seconds to "done") for one new participant's first turn."""
    with httpx.Client(base_url=base, follow_redirects=True, timeout=120) as c:
        page = c.get("/s/demo-talk/join")
        page = c.post("/s/demo-talk/join", data={"csrfmiddlewaretoken": _csrf(page.text)})
        page = c.post("/s/demo-talk/consent", data={"csrfmiddlewaretoken": _csrf(page.text), "decision": "agree"})
        page = c.post("/s/demo-talk/profile", data={"csrfmiddlewaretoken": _csrf(page.text),
                                                     "age": "prefer-not-to-say", "gender": "prefer-not-to-say"})
        token = _csrf(page.text)
        started = time.perf_counter()
        first = done = None
        with c.stream("POST", "/s/demo-talk/talk/stream", headers={"X-CSRFToken": token},
                      data={"csrfmiddlewaretoken": token, "message": message}) as response:
            for line in response.iter_lines():
                if first is None and '"delta"' in line:
                    first = time.perf_counter() - started
                if '"done"' in line:
                    done = time.perf_counter() - started
                if '"error"' in line:
                    raise RuntimeError(line)
        assert first is not None and done is not None, "the stream ended without answers"
        return first, done


def direct_round(base_url: str, message: str, tokens: int) -> tuple[float, float]:
    from feedback.llm_client import EndpointConfig, StreamedChat

    async def go() -> tuple[float, float]:
        started = time.perf_counter()
        first: list[float] = []

        async def one(model: str) -> None:
            chat = StreamedChat(EndpointConfig(base_url, model, {"max_tokens": tokens}),
                                [{"role": "user", "content": message}])
            async for _ in chat.deltas(client):
                if not first:
                    first.append(time.perf_counter() - started)

        async with httpx.AsyncClient(timeout=120) as client:
            await asyncio.gather(*(one(m) for m in ("tiny-a", "tiny-b", "tiny-c")))
        return first[0], time.perf_counter() - started

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=40, help="tokens per answer (max_tokens)")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import django

    django.setup()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    from feedback.llm_dev_server import DevServer, TinyLMConfig

    llm = DevServer(config=TinyLMConfig(default_max_tokens=args.tokens)).start()
    tmp = tempfile.mkdtemp(prefix="chorus-stream-bench-")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3", "DJANGO_SETTINGS_MODULE": "config.settings.base",
           "DEBUG": "0", "CHORUS_EMBED_ON_IMPORT": "0"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    subprocess.run([*manage, "seed_demo_conversation", "--llm-url", llm.base_url], env=env, check=True,
                   capture_output=True)
    # Every demo endpoint answers with --tokens tokens.
    subprocess.run([*manage, "shell", "-c",
                    "from feedback.models import ModelEndpoint as E\n"
                    f"[E.objects.filter(pk=e.pk).update(params={{**e.params, 'max_tokens': {args.tokens}}}) "
                    "for e in E.objects.all()]"], env=env, check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "config.asgi:application"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                httpx.get(base + "/s/demo-talk/join", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        chorus_round(base, "warm-up")
        direct_round(llm.base_url, "warm-up", args.tokens)
        chorus, direct = [], []
        for i in range(args.rounds):
            message = f"Tell me something about rivers, number {i}."
            chorus.append(chorus_round(base, message))
            direct.append(direct_round(llm.base_url, message, args.tokens))
    finally:
        server.terminate()
        server.wait(10)
        llm.stop()

    def med(values: list[tuple[float, float]], k: int) -> float:
        return statistics.median(v[k] for v in values) * 1000

    print(f"{platform.node()} · {os.cpu_count()} CPUs · {platform.python_version()} · "
          f"{time.strftime('%Y-%m-%d', time.gmtime())} · rounds={args.rounds} · 3 answers × {args.tokens} tokens")
    print("| path | first token (median ms) | all answers complete (median ms) |")
    print("|---|---:|---:|")
    print(f"| model server directly (3 concurrent streams) | {med(direct, 0):.0f} | {med(direct, 1):.0f} |")
    print(f"| through Chorus /talk/stream (daphne, stored) | {med(chorus, 0):.0f} | {med(chorus, 1):.0f} |")
    print(f"| overhead | {med(chorus, 0) - med(direct, 0):+.0f} | {med(chorus, 1) - med(direct, 1):+.0f} "
          f"(×{med(chorus, 1) / med(direct, 1):.2f}) |")


if __name__ == "__main__":
    main()
