"""The first judgment a fresh web process serves: cold, and after training.warmup.warm() has run.

Each run is a FRESH Python process on a COPY of the demo database (so the demo itself is untouched):
Django starts, a new annotator joins the demo's active study, and the process serves that annotator's
first compare page (GET) and first judgment (POST: with in-process tasks the judgment updates the
annotator's posterior before it answers, as under `make demo`) through Django's test client. "warm" calls
training.warmup.warm() first, as the web process's first request does in the background. Medians over
--runs processes per mode.

    make demo   # once (seeds and trains the demo study), then stop it
    .venv/bin/python benchmarks/warmup_bench.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, re, sys, time
import django
django.setup()
from django.test import Client
from django.utils import timezone
from feedback import services
from feedback.models import Study
from training.models import ModelVersion
from training import warmup

mode = sys.argv[1]
version = ModelVersion.objects.filter(status="active", study__status="active").select_related("study").first()
assert version is not None, "no active model: run `make demo` first"
study = version.study
annotator, _ = services.annotator_join(study=study, external_id=f"warmup-bench-{mode}-{time.time_ns()}")
annotator.consented_at = annotator.profile_completed_at = timezone.now()
annotator.save()
client = Client()
client.force_login(annotator.user)
warm_s = None
if mode == "warm":
    started = time.perf_counter()
    warmup.warm()
    warm_s = time.perf_counter() - started
url = f"/s/{study.slug}/compare"
started = time.perf_counter()
page = client.get(url)
get_s = time.perf_counter() - started
html = page.content.decode()
pair = re.search(r'name="pair" value="(\d+)"', html).group(1)
key = re.search(r'name="client_key" value="([0-9a-f]{32})"', html).group(1)
started = time.perf_counter()
done = client.post(url, {"pair": pair, "client_key": key, "choice": "left", "time_ms": "5000"})
post_s = time.perf_counter() - started
assert done.status_code in (200, 302), done.status_code
print(json.dumps({"get_s": get_s, "post_s": post_s, "warm_s": warm_s, "selector": study.selector}))
"""


def run_once(db_copy: Path, mode: str) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.demo", "DATABASE_URL": f"sqlite:///{db_copy}",
           "CHORUS_WARM_ON_FIRST_REQUEST": "0", "LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=str(ROOT / "var" / "chorus.sqlite3"), help="the demo database")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per mode")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        db_copy = Path(tmp) / "bench.sqlite3"
        shutil.copy(args.db, db_copy)
        for _ in range(args.runs):
            for mode in ("cold", "warm"):  # interleaved: drifting machine load hits both alike
                results[mode].append(run_once(db_copy, mode))
    summary = {}
    for mode, rows in results.items():
        summary[mode] = {k: round(statistics.median(r[k] for r in rows), 3)
                         for k in ("get_s", "post_s") } | {"first_judgment_s": round(statistics.median(
                             r["get_s"] + r["post_s"] for r in rows), 3)}
        if mode == "warm":
            summary[mode]["warm_s"] = round(statistics.median(r["warm_s"] for r in rows), 3)
    summary["selector"] = results["cold"][0]["selector"]
    summary["ratio_cold_over_warm"] = round(summary["cold"]["first_judgment_s"] / summary["warm"]["first_judgment_s"], 1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
