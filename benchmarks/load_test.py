"""Annotation-loop load test: N simulated annotators hammering next-pair + judgment over real HTTP.

Bounded and loopback-only. It needs a PostgreSQL database in DATABASE_URL (it migrates it, creates a
throwaway study there and deletes it afterwards), then either starts an ASGI server on 127.0.0.1 or uses
the one at --url (which must serve the same database). Each simulated annotator joins (getting its API
token), then loops GET /studies/{id}/next-pair/ → POST /judgments/ until the study has nothing left for it or
--duration seconds have passed. It reports judgments/s and the p50/p95/p99 latency of both calls.

    createdb -h 127.0.0.1 -U postgres chorus_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench \\
        .venv/bin/python benchmarks/load_test.py --annotators 50 --duration 30 --workers 2

Judgment hooks (training) enqueue to a Redis broker (--broker, a Redis db of its own; no worker runs, and the
queues are purged at the end), as in a deployment: the web tier's cost of a judgment includes that enqueue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PLANTS = ["fern", "cactus", "orchid"]
ROOT = Path(__file__).resolve().parent.parent
SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.base",
    "DEBUG": "0",
    "LOG_LEVEL": "WARNING",
    # The benchmark measures the web tier: embedding on import is a GPU-queue job, not part of the loop.
    "CHORUS_EMBED_ON_IMPORT": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="use this running server (same DATABASE_URL) instead of starting one")
    p.add_argument("--annotators", type=int, default=50, help="concurrent simulated annotators (default 50)")
    p.add_argument(
        "--duration", type=float, default=30.0, help="seconds of load after everyone joined (default 30)"
    )
    p.add_argument("--pairs", type=int, default=0, help="pairs in the study (default: enough for the run)")
    p.add_argument("--overlap", type=int, default=3, help="study overlap target (default 3)")
    p.add_argument(
        "--server",
        choices=["uvicorn", "daphne", "gunicorn"],
        default=None,
        help="ASGI server to start (default: uvicorn if installed, else daphne)",
    )
    p.add_argument("--workers", type=int, default=2,
                   help="server worker processes (uvicorn, gunicorn; default 2)")
    p.add_argument("--threads", type=int, default=16, help="threads per gunicorn worker (default 16)")
    p.add_argument("--port", type=int, default=0, help="port to start the server on (default: a free one)")
    p.add_argument(
        "--conn-max-age",
        type=int,
        default=0,
        help="DB_CONN_MAX_AGE for the started server without --pool (default 0; see BENCHMARKS.md: "
        "persistent connections leak under ASGI)",
    )
    p.add_argument(
        "--pool",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve with Django's psycopg connection pool (DATABASE_URL ?pool=true, DB_CONN_MAX_AGE=0); "
        "default: on when psycopg-pool is installed",
    )
    p.add_argument(
        "--broker",
        default="redis://127.0.0.1:6379/13",
        help="Celery broker for the server's judgment hooks (purged afterwards)",
    )
    p.add_argument("--think-ms", type=float, default=0.0, help="pause between an annotator's calls")
    p.add_argument("--keep", action="store_true", help="keep the study (default: delete it afterwards)")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    if args.annotators < 1 or args.duration <= 0 or args.duration > 600:
        p.error("--annotators must be >= 1 and --duration within (0, 600] seconds")
    return args


# ------------------------------------------------------------------------------------------- database side


def setup_django(broker: str) -> None:
    for key, value in SERVER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("CELERY_BROKER_URL", broker)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "DATABASE_URL must point at a PostgreSQL database (e.g. postgres://postgres@127.0.0.1/chorus_bench)"
        )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def create_study(n_pairs: int, overlap: int):
    from feedback import services

    study = services.study_create(
        name=f"load-test-{uuid.uuid4().hex[:8]}",
        created_by=None,
        profile_fields=[],
        overlap_target=overlap,
        pairs_per_annotator=1_000_000,
    )
    rows = (
        json.dumps(
            {
                "prompt": f"Load-test question {i}: how should I water a {PLANTS[i % 3]}?",
                "chosen": f"Answer A{i}. " + "Water it when the top of the soil is dry. " * 6,
                "rejected": f"Answer B{i}. " + "Water it every day whatever the weather. " * 6,
                "chosen_model": "Aster-7B",
                "rejected_model": "Bramble-13B",
            }
        )
        for i in range(n_pairs)
    )
    services.study_import(study=study, data="\n".join(rows).encode(), filename="load.jsonl")
    return study


def delete_study(study) -> None:
    from django.contrib.auth import get_user_model

    user_ids = list(study.annotators.values_list("user_id", flat=True))
    study.delete()
    get_user_model().objects.filter(id__in=user_ids).delete()


def purge_broker() -> None:
    try:
        from config.celery import app

        app.control.purge()
    except Exception as exc:  # a broker that is down has nothing to purge
        print(f"(could not purge the broker: {exc})", file=sys.stderr)


# --------------------------------------------------------------------------------------------- server side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = args.port or free_port()
    env = {
        **os.environ,
        **SERVER_ENV,
        "DB_CONN_MAX_AGE": str(args.conn_max_age),
        "CELERY_BROKER_URL": args.broker,
        "PYTHONPATH": str(ROOT),
    }
    if args.pool:
        # Under ASGI every request runs its sync view in a fresh thread, so a persistent per-thread
        # connection is never reused; a process-wide pool is what makes connections outlive a request.
        sep = "&" if "?" in env["DATABASE_URL"] else "?"
        env["DATABASE_URL"] += f"{sep}pool=true"
        env["DB_CONN_MAX_AGE"] = "0"
    py = sys.executable
    if args.server == "uvicorn":
        cmd = [
            py,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ]
    elif args.server == "gunicorn":
        # WSGI for HTTP (websockets would go to the ASGI app beside it): threads that live as long as the
        # worker, so per-thread state (connections, Celery's backend) outlives a request.
        cmd = [
            py, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--workers", str(args.workers), "--worker-class", "gthread", "--threads", str(args.threads),
            # the clients hold their connection open while everyone joins (gunicorn's default: 2 s)
            "--keep-alive", "75", "--log-level", "warning",
        ]
    else:
        if args.workers > 1:
            print("(daphne runs one process: --workers ignored)", file=sys.stderr)
        cmd = [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", "config.asgi:application"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/v1/me/", timeout=2).status_code == 401:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    sys.exit("the server did not come up within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------------------------------ CPU accounting


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds (Linux /proc); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _pg_backend_pids() -> list[int]:
    """Backends serving the benchmark database, except this script's own connection."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cur.fetchall()]


class CpuMeter:
    """CPU seconds used by the server's processes and by PostgreSQL's backends (both on loopback)."""

    def __init__(self, server_pgid: int | None):
        self.server_pgid = server_pgid

    def snapshot(self) -> dict[str, dict[int, float]]:
        server = {p: _proc_cpu(p) for p in _group_pids(self.server_pgid)} if self.server_pgid else {}
        try:
            pg = {p: _proc_cpu(p) for p in _pg_backend_pids()}
        except Exception:
            pg = {}
        return {"server": server, "postgres": pg}

    @staticmethod
    def used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
        return {
            kind: round(sum(cpu - before[kind].get(pid, 0.0) for pid, cpu in after[kind].items()), 1)
            for kind in after
        }


# --------------------------------------------------------------------------------------------- client side


@dataclass
class Stats:
    next_pair_ms: list[float] = field(default_factory=list)
    judgment_ms: list[float] = field(default_factory=list)
    judgments: int = 0
    acknowledged: set[int] = field(default_factory=set)  # judgment ids the server answered 201 for
    joined: int = 0  # annotators past their join call (failed joins count too: they will not start)
    finished: int = 0  # annotators that got 204 (nothing left)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def annotator(
    url: str, study_id: int, start: asyncio.Event, deadline: list[float], stats: Stats, think_s: float, n: int
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        resp = await client.post(f"/api/v1/studies/{study_id}/join/", json={"external_id": f"load-{n}"})
        stats.joined += 1
        if resp.status_code not in (200, 201):
            stats.error(f"join {resp.status_code}")
            return
        client.headers["Authorization"] = f"Token {resp.json()['token']}"
        await start.wait()
        i = 0
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            resp = await client.get(f"/api/v1/studies/{study_id}/next-pair/")
            t1 = time.perf_counter()
            stats.next_pair_ms.append((t1 - t0) * 1000)
            if resp.status_code == 204:
                stats.finished += 1
                return
            if resp.status_code != 200:
                stats.error(f"next-pair {resp.status_code}")
                continue
            pair_id = resp.json()["pair_id"]
            if think_s:
                await asyncio.sleep(think_s)
            body = {
                "pair_id": pair_id,
                "choice": "ab"[i % 2] if i % 5 else "tie",
                "strength": 60,
                "time_ms": 3000,
                "client_key": f"{n}-{i}",
            }
            t2 = time.perf_counter()
            resp = await client.post("/api/v1/judgments/", json=body)
            stats.judgment_ms.append((time.perf_counter() - t2) * 1000)
            if resp.status_code == 201:
                stats.judgments += 1
                stats.acknowledged.add(int(resp.json()["id"]))
            else:
                stats.error(f"judgment {resp.status_code}")
            i += 1
            if think_s:
                await asyncio.sleep(think_s)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


async def run_load(url: str, study_id: int, args: argparse.Namespace, meter: CpuMeter) -> dict:
    stats = Stats()
    start = asyncio.Event()
    deadline = [float("inf")]
    tasks = [
        asyncio.create_task(annotator(url, study_id, start, deadline, stats, args.think_ms / 1000, n))
        for n in range(args.annotators)
    ]
    # Joins first (they are not part of the loop being measured), then everyone starts at once.
    join_deadline = time.monotonic() + 60
    while stats.joined < args.annotators and time.monotonic() < join_deadline:
        await asyncio.sleep(0.1)
    snap0 = await asyncio.to_thread(meter.snapshot)
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline[0] = t0 + args.duration
    start.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.duration + 60)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    used = CpuMeter.used(snap0, await asyncio.to_thread(meter.snapshot))
    per_judgment = {
        k: round(1000 * v / stats.judgments, 2) if stats.judgments else None for k, v in used.items()
    }
    return {
        "annotators": args.annotators,
        "duration_s": round(elapsed, 2),
        "judgments": stats.judgments,
        "judgments_per_s": round(stats.judgments / elapsed, 1),
        "requests_per_s": round((len(stats.next_pair_ms) + len(stats.judgment_ms)) / elapsed, 1),
        "next_pair_ms": _summary(stats.next_pair_ms),
        "judgment_ms": _summary(stats.judgment_ms),
        "annotators_out_of_pairs": stats.finished,
        "errors": stats.errors,
        "acknowledged_ids": stats.acknowledged,
        "load_generator_cpu_s": round(cpu, 1),
        "server_cpu_s": used["server"] if meter.server_pgid else None,
        "postgres_cpu_s": used["postgres"],
        # CPU per judgment (its next-pair call included): what bounds throughput on a machine of its own.
        "cpu_ms_per_judgment": {
            "server": per_judgment["server"] if meter.server_pgid else None,
            "postgres": per_judgment["postgres"],
        },
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
    }


def count_stored(study, acknowledged: set[int]) -> dict:
    """What the database holds after the run against what the clients were told: every acknowledged
    judgment stored (lost = 0), none stored twice (per annotator and pair, or per client key), and no pair
    judged or assigned past its overlap."""
    from django.db.models import Count

    from feedback.models import Assignment, Judgment, Pair

    stored = set(Judgment.objects.filter(pair__study=study).values_list("id", flat=True))
    twice = (
        Judgment.objects.filter(pair__study=study).values("annotator_id", "pair_id")
        .annotate(n=Count("id")).filter(n__gt=1).count()
    )
    keys_twice = (
        Judgment.objects.filter(pair__study=study).values("annotator_id", "client_key")
        .annotate(n=Count("id")).filter(n__gt=1).count()
    )
    over = Pair.objects.filter(study=study, n_judgments__gt=study.overlap_target).count()
    live = (
        Assignment.objects.filter(pair__study=study, released_at__isnull=True).values("pair_id")
        .annotate(n=Count("id")).filter(n__gt=study.overlap_target).count()
    )
    return {
        "acknowledged": len(acknowledged),
        "stored": len(stored),
        "lost": len(acknowledged - stored),
        "stored_not_acknowledged": len(stored - acknowledged),
        "duplicated": twice + keys_twice,
        "pairs_over_overlap": over + live,
    }


def _summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": round(pct(values, 50), 1),
        "p95": round(pct(values, 95), 1),
        "p99": round(pct(values, 99), 1),
        "max": round(max(values), 1) if values else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.server is None:
        try:
            import uvicorn  # noqa: F401

            args.server = "uvicorn"
        except ImportError:
            args.server = "daphne"
    if args.pool is None:
        try:
            import psycopg_pool  # noqa: F401

            args.pool = True
        except ImportError:
            args.pool = False
    setup_django(args.broker)
    n_pairs = args.pairs or max(2000, args.annotators * int(args.duration) * 8 // args.overlap)
    t = time.perf_counter()
    study = create_study(n_pairs, args.overlap)
    print(
        f"study {study.pk}: {n_pairs} pairs, overlap {args.overlap} "
        f"(set up in {time.perf_counter() - t:.1f} s)"
    )
    proc = None
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            proc, url = start_server(args)
            print(
                f"started {args.server} ({args.workers if args.server != 'daphne' else 1} worker(s)) "
                f"at {url}, " + ("connection pool" if args.pool else f"DB_CONN_MAX_AGE={args.conn_max_age}")
            )
        result = asyncio.run(run_load(url, study.pk, args, CpuMeter(proc.pid if proc else None)))
        result["integrity"] = count_stored(study, result.pop("acknowledged_ids"))
    finally:
        if proc is not None:
            stop_server(proc)
        if not args.keep:
            delete_study(study)
        purge_broker()
    result.update(
        {
            "server": "external" if args.url else args.server,
            "workers": None if args.url else (args.workers if args.server in ("uvicorn", "gunicorn") else 1),
            "conn_max_age": None if args.url or args.pool else args.conn_max_age,
            "pool": bool(args.pool and not args.url),
            "pairs": n_pairs,
            "machine": f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}",
        }
    )
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    bad = result["integrity"]["lost"] or result["integrity"]["duplicated"] or result["integrity"]["pairs_over_overlap"]
    return 0 if not result["errors"] and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
