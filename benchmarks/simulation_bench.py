"""Benchmark of online personalization and active learning through the real services.

    .venv/bin/python benchmarks/simulation_bench.py              # full run (~10 min, 2 CPU cores)
    .venv/bin/python benchmarks/simulation_bench.py --quick      # smoke run (~1-2 min)
    .venv/bin/python benchmarks/simulation_bench.py --write BENCHMARKS.md   # also update that section

Runs in a throwaway PostgreSQL database (config.settings.test, eager Celery): creates a study of
generated responses with controlled attributes (training.simulation.synthetic_study_lines), runs the
`manage.py simulate` protocol for each strategy on the same simulated annotators, and reports
learning curves, labels needed to reach 90% of the Bayes-optimal accuracy, and the latency of
next-pair selection (assignment_next) and judgment → posterior updated (judgment_create with the eager
posterior update) as measured inside that run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

SECTION = "## Online personalization and active learning"


def _setup_db(name: str):
    import django
    from django.conf import settings

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = name
    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    return connection, old


def run(args: argparse.Namespace) -> dict[str, Any]:
    from training.simulation import SimulationConfig, create_synthetic_study, run_simulation

    out: dict[str, Any] = {"runs": []}
    for kind in args.kinds.split(","):
        study = create_synthetic_study(name=f"bench-{kind}-{time.time_ns()}", n_prompts=args.prompts,
                                       seed=args.seed, model_kind=kind)
        config = SimulationConfig(
            annotators=args.annotators, labels=args.labels, strategies=tuple(args.strategies.split(",")),
            seed=args.seed, eval_pairs=args.eval_pairs, warmup_annotators=args.warmup_annotators,
            warmup_labels=args.warmup_labels, kind=kind, population=args.population,
            retrain_every=args.retrain_every,
        )
        result = run_simulation(study, config, log=print)
        result["kind"] = kind
        out["runs"].append(result)
    return out


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def markdown(out: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    lines = [
        SECTION,
        "",
        f"Machine: {args.machine}. Date: {args.date}. Command: `{command}` ({out['seconds']:.0f} s in all).",
        "",
        "Protocol (training/simulation.py, `manage.py simulate`): a study of generated short responses with",
        "controlled visible attributes (length, caution, humour, markdown; metadata-driven) and all-pairs per",
        f"prompt ({args.prompts} prompts × 8 responses); a pluralistic population of 4 types (concise 35%,",
        "thorough 30%, playful 20%, careful 15%) with Bradley–Terry labels and PRISM profiles correlated with",
        f"type. Warm-up: {args.warmup_annotators} annotators × {args.warmup_labels} labels (random selector),",
        f"then one global retrain; then {args.annotators} NEW annotators per strategy (the same simulated",
        f"people for every strategy) join, fill in their profile, and label {args.labels} pairs one at a time",
        "through `assignment_next` / `judgment_create` (eager posterior update). Accuracy: their posterior",
        f"under the active model on {args.eval_pairs} held-out pairs nobody labels, as expected accuracy",
        "against their noisy labels (acc), agreement with the Bayes-optimal choice (agree) and against one",
        "sampled label per pair (sampled); Bayes-optimal = mean max(p, 1−p) of the true BT probabilities.",
        "",
    ]
    for run in out["runs"]:
        strategies = list(run["strategies"])
        first = run["strategies"][strategies[0]]
        lines += [
            f"### Model `{run['kind']}` — Bayes-optimal {first['bayes_optimal']:.3f}, 90% target "
            f"{first['target']:.3f}, population model {first['population']['acc_expected']:.3f}",
            "",
            "| labels | " + " | ".join(f"{s} acc / agree / sampled" for s in strategies) + " |",
            "|---:|" + "---|" * len(strategies),
        ]
        ns = [p["n"] for p in first["curve"]]
        for n in ns:
            cells = []
            for s in strategies:
                p = next((q for q in run["strategies"][s]["curve"] if q["n"] == n), None)
                cells.append(f"{p['acc_expected']:.3f} / {p['agree_bayes']:.3f} / {p['acc_sampled']:.3f}" if p else "—")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines += ["", "| strategy | labels to 90% of Bayes-optimal | vs random | acc at 10 | acc at max labels "
                  "| next pair p50 / p95 (ms) | judgment → posterior p50 / p95 (ms) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for s in strategies:
            sm = run["strategies"][s]
            at10 = next((q["acc_expected"] for q in sm["curve"] if q["n"] == 10), None)
            lat = sm["latency_ms"]
            ratio = sm.get("labels_vs_random")
            lines.append(
                f"| {s} | {sm['labels_to_target'] if sm['labels_to_target'] is not None else 'not reached'} "
                f"| {f'{ratio:.2f}×' if ratio is not None else '—'} | {_fmt(at10)} | {_fmt(sm['curve'][-1]['acc_expected'])} "
                f"| {lat['selection_p50']:.1f} / {lat['selection_p95']:.1f} "
                f"| {lat['judgment_p50']:.1f} / {lat['judgment_p95']:.1f} |"
            )
        lines += ["", "Per type (expected accuracy; population model → after 0 / 5 / 10 / max labels):", ""]
        lines += ["| strategy | " + " | ".join(first["by_type"]) + " |", "|---|" + "---|" * len(first["by_type"])]
        for s in strategies:
            cells = []
            for t in run["strategies"][s]["by_type"].values():
                c = {int(k): v for k, v in t["curve"].items()}
                last = max(int(k) for k in c)
                cells.append(f"{t['population']:.2f} → " + " / ".join(
                    f"{c[k]:.2f}" for k in sorted({0, 5, 10, last} & {int(x) for x in c})) + f" (Bayes {t['bayes']:.2f})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section in a markdown file, leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text.rstrip() + "\n\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    path.write_text(new.rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--kinds", default="vpl", help="comma list of model kinds (vpl, pal, bt)")
    ap.add_argument("--strategies", default="random,info_gain")
    ap.add_argument("--population", default="pluralistic")
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--annotators", type=int, default=12)
    ap.add_argument("--labels", type=int, default=30)
    ap.add_argument("--eval-pairs", type=int, default=300)
    ap.add_argument("--warmup-annotators", type=int, default=40)
    ap.add_argument("--warmup-labels", type=int, default=30)
    ap.add_argument("--retrain-every", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db-name", default="chorus_simulation_bench", help="throwaway database (dropped after)")
    ap.add_argument("--write", default=None, help="markdown file whose section to update (e.g. BENCHMARKS.md)")
    ap.add_argument("--json", default=None, help="also dump raw results as JSON here")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--machine", default=f"{os.cpu_count()}-core CPU, no GPU")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.annotators, args.labels, args.eval_pairs = 20, 6, 10, 80
        args.warmup_annotators, args.warmup_labels, args.strategies = 12, 20, "random,info_gain"
    command = "python benchmarks/simulation_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    connection, old_name = _setup_db(args.db_name)
    started = time.perf_counter()
    try:
        out = run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    out["seconds"] = time.perf_counter() - started
    text = markdown(out, args, command.strip())
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    if args.write:
        write_section(Path(args.write), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
