"""The cheapest possible annotation loop on this machine: the limit the web tier's load test is compared with.

N concurrent clients, each on its own psycopg connection, loop a bare "judgment": one transaction with an
INSERT of a judgment row (unique client key) and the UPDATE of its pair's counter — the two writes every
real judgment needs, with no HTTP, no Django, no auth and no pair selection. It reports judgments/s,
p50/p95 latency and the CPU seconds PostgreSQL's backends and this client spent per judgment.

    createdb -h 127.0.0.1 -U postgres chorus_bench
    .venv/bin/python benchmarks/bare_loop.py --dsn postgresql://postgres@127.0.0.1:5432/chorus_bench \\
        --clients 100 --duration 20 [--think-ms 1000]

Its tables (bare_loop_pair, bare_loop_judgment) are created afresh and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from pathlib import Path

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def client(pool: AsyncConnectionPool, n_pairs: int, stop: float, think_s: float, lat: list[float],
                 seed: int) -> int:
    rng = random.Random(seed)
    done = 0
    while time.perf_counter() < stop:
        pair = rng.randrange(1, n_pairs + 1)
        t0 = time.perf_counter()
        async with pool.connection() as conn:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO bare_loop_judgment (pair_id, annotator, choice, client_key, created_at)"
                    " VALUES (%s, %s, 'a', %s, now())",
                    (pair, seed, uuid.uuid4().hex),
                )
                await conn.execute("UPDATE bare_loop_pair SET n_judged = n_judged + 1 WHERE id = %s", (pair,))
        lat.append((time.perf_counter() - t0) * 1000)
        done += 1
        if think_s:
            await asyncio.sleep(think_s)
    return done


async def run(args: argparse.Namespace) -> dict:
    async with await AsyncConnection.connect(args.dsn, autocommit=True) as admin:
        await admin.execute("DROP TABLE IF EXISTS bare_loop_judgment, bare_loop_pair")
        await admin.execute("CREATE TABLE bare_loop_pair (id bigint PRIMARY KEY, n_judged int NOT NULL DEFAULT 0)")
        await admin.execute(
            "CREATE TABLE bare_loop_judgment (id bigserial PRIMARY KEY, pair_id bigint NOT NULL REFERENCES"
            " bare_loop_pair(id), annotator int NOT NULL, choice text NOT NULL, client_key text NOT NULL UNIQUE,"
            " created_at timestamptz NOT NULL)"
        )
        await admin.execute("INSERT INTO bare_loop_pair (id) SELECT generate_series(1, %s)", (args.pairs,))
        lat: list[float] = []
        # The clients share a pool, as web processes would (100 connections would exceed max_connections).
        async with AsyncConnectionPool(args.dsn, min_size=args.pool, max_size=args.pool, open=False) as pool:
            await pool.wait()
            cur = await admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            pids = [r[0] for r in await cur.fetchall()]
            pg0 = {p: _proc_cpu(p) for p in pids}
            cpu0, t0 = time.process_time(), time.perf_counter()
            stop = t0 + args.duration
            think = args.think_ms / 1000
            counts = await asyncio.gather(*(client(pool, args.pairs, stop, think, lat, i) for i in range(args.clients)))
            pg = sum(_proc_cpu(p) - pg0[p] for p in pids)
        wall = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
        stored = (await (await admin.execute("SELECT count(*) FROM bare_loop_judgment")).fetchone())[0]
        summed = (await (await admin.execute("SELECT sum(n_judged) FROM bare_loop_pair")).fetchone())[0]
        await admin.execute("DROP TABLE bare_loop_judgment, bare_loop_pair")
    n = sum(counts)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
    return {
        "clients": args.clients,
        "pool": args.pool,
        "duration_s": round(wall, 1),
        "think_ms": args.think_ms,
        "judgments": n,
        "stored": stored,
        "counter_sum": summed,
        "judgments_per_s": round(n / wall, 1),
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
        "postgres_cpu_ms_per_judgment": round(1000 * pg / max(n, 1), 3),
        "client_cpu_ms_per_judgment": round(1000 * client_cpu / max(n, 1), 3),
        "load_avg_before": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=os.environ.get("BARE_LOOP_DSN", "postgresql://postgres@127.0.0.1:5432/chorus_bench"))
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--think-ms", type=float, default=0.0)
    p.add_argument("--pairs", type=int, default=4000)
    p.add_argument("--pool", type=int, default=16, help="connections shared by the clients")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
