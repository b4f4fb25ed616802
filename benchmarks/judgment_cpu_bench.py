"""CPU and SQL statements per annotation loop, in one process, through the real ASGI application.

Where load_test.py measures the whole deployment (uvicorn workers, loopback HTTP, 50 concurrent clients) and
so mixes queueing and other processes into its figures, this harness isolates what the web tier itself
spends on one loop — `GET /api/v1/studies/{id}/next-pair/` then `POST /api/v1/judgments/`, token auth, as
load_test.py does — so a change to the hot path can be measured on a machine shared with other work:

- CPU ms per loop: time.process_time() (this process, every thread) over batches of loops; the median
  of the batches is quoted, since other processes on the machine disturb single batches, not the median;
- SQL statements per loop: every statement any thread sends through a Django cursor (BEGIN/COMMIT are
  not cursor statements and are not counted), split into next-pair and judgment;
- a breakdown by phase (auth, next-pair selection, judgment write, serialisation, request parsing, DRF,
  middleware) from a cProfile run of one extra batch, timed in thread CPU time.

The loops run one after another (no concurrency), round-robin over M annotators, through
config.asgi.application with httpx.ASGITransport: the ASGI handler, every middleware, DRF and the
services are the real ones, only the socket is missing. The client's own CPU (httpx) is in the figure
too; PostgreSQL's is not. Judgment hooks run as in a deployment (Celery publish to a Redis broker db of its
own, purged at the end; the realtime group_send) unless --no-hooks.

    createdb -h 127.0.0.1 -U postgres chorus_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench \\
        .venv/bin/python benchmarks/judgment_cpu_bench.py --loops 200 --batches 7 --profile

The study (N pairs, overlap 3) and its annotators are created with the app's services and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=0, help="pairs in the study (default: enough for the run)")
    p.add_argument("--annotators", type=int, default=20, help="annotators, used round-robin (default 20)")
    p.add_argument("--loops", type=int, default=200, help="loops per batch (default 200)")
    p.add_argument("--batches", type=int, default=7, help="measured batches; the median is quoted (default 7)")
    p.add_argument("--warmup", type=int, default=50, help="loops before measuring (default 50)")
    p.add_argument("--overlap", type=int, default=3, help="study overlap target (default 3)")
    p.add_argument("--profile", action="store_true", help="one more batch under cProfile: CPU by phase")
    p.add_argument("--hooks", action=argparse.BooleanOptionalAction, default=True,
                   help="run the judgment hooks (Celery publish + realtime event) as deployed (default on)")
    p.add_argument("--pool", action=argparse.BooleanOptionalAction, default=True,
                   help="Django's psycopg pool, as load_test.py serves with (default on)")
    p.add_argument("--broker", default="redis://127.0.0.1:6379/13", help="Celery broker (purged afterwards)")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON to this file")
    p.add_argument("--pstats", help="with --profile: also dump the raw cProfile stats to this file")
    args = p.parse_args(argv)
    if min(args.annotators, args.loops, args.batches) < 1 or args.warmup < 0:
        p.error("--annotators, --loops and --batches must be >= 1, --warmup >= 0")
    return args


def setup_django(args: argparse.Namespace) -> None:
    """The load test's deployment settings (config.settings.base on the PostgreSQL in DATABASE_URL)."""
    from load_test import SERVER_ENV

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("DATABASE_URL must point at a PostgreSQL database (e.g. postgres://postgres@127.0.0.1/chorus_bench)")
    if args.pool:
        # ASGI runs each request's sync code in a fresh thread: without a pool every request would connect.
        os.environ["DATABASE_URL"] = url + ("&" if "?" in url else "?") + "pool=true"
        os.environ["DB_CONN_MAX_AGE"] = "0"
    for key, value in SERVER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("CELERY_BROKER_URL", args.broker)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


# ------------------------------------------------------------------------------------ statement counting


class StatementCounter:
    """Counts statements on every connection of every thread (connections are per thread under ASGI)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        with self._lock:
            self.count += 1
        return execute(sql, params, many, context)

    def _install(self, connection: Any) -> None:
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def _on_connect(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self._install(connection)

    @contextmanager
    def installed(self):
        from django.db import connections
        from django.db.backends.signals import connection_created

        connection_created.connect(self._on_connect, dispatch_uid=id(self))
        for conn in connections.all(initialized_only=True):
            self._install(conn)
        try:
            yield self
        finally:
            connection_created.disconnect(dispatch_uid=id(self))
            for conn in connections.all(initialized_only=True):
                if self in conn.execute_wrappers:
                    conn.execute_wrappers.remove(self)


# ------------------------------------------------------------------------------------------------ the loop


@dataclass
class Loop:
    """Annotators (tokens) of one study, driven round-robin."""

    study_id: int
    tokens: list[str]
    counter: StatementCounter
    i: int = 0
    statements: dict[str, list[int]] = field(default_factory=lambda: {"next_pair": [], "judgment": []})
    errors: dict[str, int] = field(default_factory=dict)

    async def one(self, client: Any) -> None:
        n = self.i
        self.i += 1
        headers = {"Authorization": f"Token {self.tokens[n % len(self.tokens)]}"}
        c0 = self.counter.count
        resp = await client.get(f"/api/v1/studies/{self.study_id}/next-pair/", headers=headers)
        c1 = self.counter.count
        if resp.status_code != 200:
            self.errors[f"next-pair {resp.status_code}"] = self.errors.get(f"next-pair {resp.status_code}", 0) + 1
            return
        body = {
            "pair_id": resp.json()["pair_id"],
            "choice": "ab"[n % 2] if n % 5 else "tie",
            "strength": 60,
            "time_ms": 3000,
            "client_key": f"bench-{n}",
        }
        resp = await client.post("/api/v1/judgments/", json=body, headers=headers)
        c2 = self.counter.count
        if resp.status_code != 201:
            self.errors[f"judgment {resp.status_code}"] = self.errors.get(f"judgment {resp.status_code}", 0) + 1
            return
        self.statements["next_pair"].append(c1 - c0)
        self.statements["judgment"].append(c2 - c1)


async def _drive(app: Any, loop: Loop, plan: list[tuple[str, int]], profiler: Any) -> dict[str, list[float]]:
    """Run the plan ("warmup"/"measure"/"profile", loops) and return CPU ms per loop of each measured batch."""
    import httpx

    out: dict[str, list[float]] = {"cpu_ms": [], "wall_ms": []}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        for kind, n in plan:
            if kind == "profile":
                with profiler.active():
                    for _ in range(n):
                        await loop.one(client)
                continue
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                await loop.one(client)
            if kind == "measure":
                out["cpu_ms"].append(1000 * (time.process_time() - c0) / n)
                out["wall_ms"].append(1000 * (time.perf_counter() - w0) / n)
    return out


# ---------------------------------------------------------------------------------------------- profiling


class ChainProfiler:
    """cProfile of the sync middleware chain + view of each request, in thread CPU time.

    Each request runs in a thread of its own (ASGIHandler's ThreadSensitiveContext); the loops are
    sequential, so one Profile enabled around each request's get_response sees every request in turn.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.profile = cProfile.Profile(time.thread_time)
        self.requests = 0

    @contextmanager
    def active(self):
        original = self.handler.get_response

        def profiled(request):
            self.profile.enable()
            try:
                return original(request)
            finally:
                self.profile.disable()
                self.requests += 1

        self.handler.get_response = profiled
        try:
            yield
        finally:
            self.handler.get_response = original

    # phase -> (module path suffix, function name)s: per loop, the sum over the entries of each one's
    # outermost match (max cumulative time: Serializer.data calls BaseSerializer.data, and so on).
    PHASES: dict[str, list[tuple[str, str]]] = {
        "auth (token → user, annotator, study)": [("rest_framework/request.py", "_authenticate")],
        "next-pair selection + claim (services)": [("feedback/services.py", "assignment_next_with_progress")],
        "judgment write (services)": [("feedback/services.py", "judgment_create")],
        "request body parsing + validation": [("rest_framework/serializers.py", "is_valid")],
        "response serialisation": [
            ("rest_framework/serializers.py", "data"),
            ("feedback/serializers.py", "next_pair_body"),
            ("feedback/serializers.py", "judgment_body"),
        ],
        "response rendering (JSONRenderer)": [("rest_framework/renderers.py", "render")],
        "judgment hooks (on_commit: Celery publish, realtime)": [("training/hooks.py", "on_judgment_created")],
        "SQL execution (cursor.execute, client side)": [("django/db/backends/utils.py", "_execute")],
        "DRF view dispatch (all of the view)": [("rest_framework/views.py", "dispatch")],
        "whole sync chain (middleware + view)": [("django/core/handlers/base.py", "get_response")],
    }

    def breakdown(self, loops: int) -> dict[str, float]:
        stats = pstats.Stats(self.profile)
        raw: dict[tuple[str, int, str], tuple] = stats.stats  # type: ignore[attr-defined]
        found: dict[str, float] = {}
        for phase, entries in self.PHASES.items():
            cum = sum(
                max((v[3] for (file, _, func), v in raw.items() if func == name and file.endswith(path)), default=0)
                for path, name in entries
            )
            found[phase] = round(1000 * cum / loops, 3)
        chain = found["whole sync chain (middleware + view)"]
        view = found["DRF view dispatch (all of the view)"]
        found["middleware + Django handler (chain − view − rendering)"] = round(
            chain - view - found["response rendering (JSONRenderer)"], 3
        )
        # Deterministic where CPU time is not (other processes, frequency scaling): Python calls per loop.
        found["python_calls_per_loop"] = round(stats.total_calls / loops)  # type: ignore[attr-defined]
        return found

    def top(self, n: int = 25) -> list[str]:
        stats = pstats.Stats(self.profile)
        raw = stats.stats  # type: ignore[attr-defined]
        rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:n]  # by own (tottime) time
        return [f"{1000 * v[2]:9.1f} ms own {1000 * v[3]:9.1f} ms cum  {f}:{ln}({fn})" for (f, ln, fn), v in rows]


# -------------------------------------------------------------------------------------------------- run


def create_annotators(study: Any, n: int) -> list[str]:
    """n annotators joined through the app's service, with the API token join hands out."""
    from rest_framework.authtoken.models import Token

    from feedback import services

    tokens = []
    for i in range(n):
        annotator, _ = services.annotator_join(study=study, external_id=f"bench-{i}")
        tokens.append(Token.objects.get_or_create(user=annotator.user)[0].key)
    return tokens


def run_bench(
    *,
    pairs: int = 0,
    annotators: int = 20,
    loops: int = 200,
    batches: int = 7,
    warmup: int = 50,
    overlap: int = 3,
    profile: bool = False,
    hooks: bool = True,
    keep: bool = False,
    pstats_path: str | None = None,
) -> dict[str, Any]:
    """Create the study, run warm-up + measured (+ profiled) batches, delete the study; return the figures."""
    from load_test import create_study, delete_study

    from config.asgi import application, django_asgi_app
    from feedback import services

    total = warmup + loops * batches + (loops if profile else 0)
    # Every loop takes one slot (overlap per pair), and no annotator can take the same pair twice.
    n_pairs = pairs or max(-(-total // overlap) + annotators, -(-total // annotators) + 1)
    study = create_study(n_pairs, overlap)
    saved_hooks = list(services.judgment_created_hooks)
    if not hooks:
        services.judgment_created_hooks[:] = []
    try:
        tokens = create_annotators(study, annotators)
        counter = StatementCounter()
        loop = Loop(study_id=study.pk, tokens=tokens, counter=counter)
        profiler = ChainProfiler(django_asgi_app)
        plan = [("warmup", warmup)] if warmup else []
        plan += [("measure", loops)] * batches
        if profile:
            plan.append(("profile", loops))
        with counter.installed():
            # A loop of its own in a thread of its own: the caller may already run one (pytest, Playwright).
            result: dict[str, list[float]] = {}
            worker = threading.Thread(
                target=lambda: result.update(asyncio.run(_drive(application, loop, plan, profiler)))
            )
            worker.start()
            worker.join()
    finally:
        services.judgment_created_hooks[:] = saved_hooks
        if not keep:
            delete_study(study)
    if not result:
        raise RuntimeError("the benchmark loop failed (see the traceback above)")
    measured = loop.statements
    out: dict[str, Any] = {
        "pairs": n_pairs,
        "annotators": annotators,
        "loops_per_batch": loops,
        "batches": batches,
        "cpu_ms_per_loop_median": round(statistics.median(result["cpu_ms"]), 2),
        "cpu_ms_per_loop_batches": [round(v, 2) for v in result["cpu_ms"]],
        "wall_ms_per_loop_median": round(statistics.median(result["wall_ms"]), 2),
        "statements_per_loop": _stmt_summary(measured["next_pair"], measured["judgment"]),
        "errors": loop.errors,
        "hooks": hooks,
    }
    if profile and profiler.requests:
        out["profile_ms_per_loop"] = profiler.breakdown(loops)
        out["profile_top_own_time"] = profiler.top()
        if pstats_path:
            profiler.profile.dump_stats(pstats_path)
    return out


def _stmt_summary(next_pair: list[int], judgment: list[int]) -> dict[str, float | int | None]:
    if not next_pair:
        return {"total": None, "next_pair": None, "judgment": None}
    return {
        "total": statistics.median([a + b for a, b in zip(next_pair, judgment, strict=True)]),
        "next_pair": statistics.median(next_pair),
        "judgment": statistics.median(judgment),
        "max_total": max(a + b for a, b in zip(next_pair, judgment, strict=True)),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_django(args)
    from load_test import purge_broker

    load0 = os.getloadavg()[0]
    try:
        result = run_bench(
            pairs=args.pairs, annotators=args.annotators, loops=args.loops, batches=args.batches,
            warmup=args.warmup, overlap=args.overlap, profile=args.profile, hooks=args.hooks,
            pstats_path=args.pstats,
        )
    finally:
        if args.hooks:
            purge_broker()
    result["load_average_1m"] = f"{load0:.1f} → {os.getloadavg()[0]:.1f}"
    result["machine"] = f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}"
    result["pool"] = args.pool
    top = result.pop("profile_top_own_time", None)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if top:
        print("\ncProfile, top functions by own thread-CPU time (profiled batch, all loops):")
        print("\n".join(top))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**result, "profile_top_own_time": top}, indent=2) + "\n")
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
