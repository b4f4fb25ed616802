"""What the population guard costs: wall-clock seconds of a fit with and without it, and with its second
process off, on synthetic data with cached embeddings (no text encoder in the loop).

    .venv/bin/python benchmarks/guard_cost_bench.py --pairs 10000            # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/guard_cost_bench.py --pairs 66000 --users 262 --only "2 processes"

Prints one markdown table; medians of ``--repeat`` runs per row. The issue-11 targets: a guarded fit of
10k pairs < 60 s and of 66k pairs < 5 min on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from personalization_bench import BenchConfig, make_split  # noqa: E402

from personalization.synthetic import PRESETS, Population  # noqa: E402
from personalization.train import FitConfig, fit  # noqa: E402

ROWS = {  # name: (kind, FitConfig changes)
    "bt": ("bt", {}),
    "vpl raw (guard off)": ("vpl", {"guard": False}),
    "vpl guarded, 1 process": ("vpl", {"parallel": False}),
    "vpl guarded, 2 processes": ("vpl", {}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000, help="training pairs (200 users × pairs/200)")
    ap.add_argument("--users", type=int, default=200, help="seen users")
    ap.add_argument("--population", default="pets")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated parts of row names (e.g. 'guarded')")
    args = ap.parse_args(argv)
    cfg = BenchConfig(n_train_users=args.users, pairs_per_user=max(1, args.pairs // args.users), n_new_users=10)
    split = make_split(Population(PRESETS[args.population]()), cfg)
    data, profiles = split["data"], split["profiles"]
    rows = [r for r in ROWS if not args.only or any(o in r for o in args.only.split(","))]
    print(f"{len(data)} pairs, {len(data.user_ids)} users, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| fit | s (median) | guard's choice | split fit s | parallel |")
    print("|---|---|---|---|---|")
    for name in rows:
        kind, changes = ROWS[name]
        config = replace(FitConfig(progress=False), **changes)
        times, model = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model = fit(kind, data, profiles, config, seed=0)
            times.append(time.perf_counter() - t0)
        guard = model.info.get("guard", {}) if model is not None else {}
        print(f"| {name} | {statistics.median(times):.1f} | {guard.get('chosen', '—')} | "
              f"{guard.get('fit_seconds', '—')} | {guard.get('parallel', '—')} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
