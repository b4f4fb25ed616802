"""The GPU paths, measured once on a machine with CUDA (driven by benchmarks/gpu_check.sh).

    python benchmarks/gpu_check.py --out var/gpu-check/results.json [--device cuda|cpu] [--quick]

Three figures, each the median of repeated runs where it is cheap to repeat:
  encode   texts/s of the default text encoder at ~64 and ~256 tokens (bf16 autocast on CUDA)
  fit      seconds to fit BT and VPL on 100k synthetic pairs (cached embeddings, as a retrain has them)
  retrain  seconds from a retrain request to an active model version, through a real Celery worker
           process on the `gpu` queue (SQLite + kombu's filesystem broker: config/settings/gpu_check.py)

Without CUDA and without `--device cpu` it writes {"skipped": "..."} and exits 0: CI machines have no GPU.
`--device cpu --quick` runs the same steps at toy sizes, which is how the harness itself is tested.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the model answers every question with care and detail about cooking travel science history "
         "music sport health money code language law art").split()


def _texts(n: int, tokens: int) -> list[str]:
    # Distinct texts (an embedding cache must not short-circuit the timing), ~1 token per word.
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(tokens - 2)) + f" {i}" for i in range(n)]


def bench_encode(device: str, quick: bool) -> dict[str, Any]:
    import torch

    from personalization.encoder import EncoderConfig, TextEncoder

    out: dict[str, Any] = {}
    for tokens in (64, 256):
        n = 64 if quick else (8192 if tokens == 64 else 4096)
        enc = TextEncoder(EncoderConfig(device=device, batch_size=256 if device == "cuda" else 64, max_length=tokens))
        enc.encode(_texts(min(n, 256), tokens))  # warm-up: kernels, allocator
        rates = []
        for rep in range(3):
            texts = [f"{t} r{rep}" for t in _texts(n, tokens)]
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            enc.encode(texts)
            if device == "cuda":
                torch.cuda.synchronize()
            rates.append(n / (time.perf_counter() - t0))
        out[f"texts_per_s_{tokens}_tokens"] = round(statistics.median(rates), 1)
        out[f"n_texts_{tokens}"] = n
    return out


def bench_fit(device: str, quick: bool) -> dict[str, Any]:
    import torch

    from personalization.synthetic import Population, labelled, ufp
    from personalization.train import FitConfig, PreferenceData, fit

    n_users, per_user = (20, 20) if quick else (1000, 100)
    pop = Population(ufp(seed=0))
    users = pop.draw_users(n_users)
    g = torch.Generator().manual_seed(0)
    prompt, chosen, rejected, user = [], [], [], []
    for i, u in enumerate(users):
        pairs = pop.sample_pairs(per_user, g)
        p, c, r = labelled(pairs, pop.label(u, pairs, g))
        prompt.append(p), chosen.append(c), rejected.append(r)
        user.append(torch.full((per_user,), i, dtype=torch.long))
    data = PreferenceData(torch.cat(user), torch.cat(prompt), torch.cat(chosen), torch.cat(rejected),
                          [u.id for u in users])
    out: dict[str, Any] = {"pairs": len(data), "users": n_users}
    for kind in ("bt", "vpl"):
        cfg = FitConfig(epochs=1 if quick else 10, progress=False)
        t0 = time.perf_counter()
        fit(kind, data, None, cfg, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        out[f"{kind}_fit_s"] = round(time.perf_counter() - t0, 2)
        out[f"{kind}_epochs"] = cfg.epochs
    return out


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def bench_retrain(device: str, quick: bool, workdir: Path) -> dict[str, Any]:
    """Seed a study (eagerly, in this process's children), then time one retrain through a real worker."""
    shutil.rmtree(workdir, ignore_errors=True)
    for sub in ("broker", "broker-processed", "artifacts"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.gpu_check", "GPU_CHECK_DIR": str(workdir),
           "CHORUS_ENCODER_DEVICE": device, "PYTHONUNBUFFERED": "1"}
    seed_env = {**env, "GPU_CHECK_EAGER": "1"}
    _manage(seed_env, "migrate", "--noinput")
    _manage(seed_env, "seed_demo")
    _manage(seed_env, "seed_demo_labels", "--annotators", "8" if quick else "48", "--labels", "8")

    os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "GPU_CHECK_DIR", "CHORUS_ENCODER_DEVICE")})
    os.environ["GPU_CHECK_EAGER"] = "0"
    import django

    django.setup()
    from feedback.models import Judgment, Study
    from training import services as ts
    from training.models import ModelVersion

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu,default", "--pool=solo", "-c", "1",
         "--loglevel=INFO", f"--logfile={workdir / 'worker.log'}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        study = Study.objects.get(slug="demo")
        t0 = time.perf_counter()
        version = ts.model_version_request(study=study, kind="vpl")
        deadline = time.monotonic() + 300
        done = {ModelVersion.Status.ACTIVE, ModelVersion.Status.READY, ModelVersion.Status.FAILED}
        while version.status not in done and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}); see {workdir / 'worker.log'}")
            time.sleep(0.2)
            version.refresh_from_db()
        seconds = time.perf_counter() - t0
    finally:
        worker.terminate()
        worker.wait(30)
    if version.status not in done:
        raise RuntimeError(f"the retrain did not finish in 300 s (status {version.status}); see worker.log")
    metrics = version.metrics or {}
    return {
        "status": version.status,
        "request_to_done_s": round(seconds, 2),
        "judgments": Judgment.objects.filter(pair__study=study).count(),
        "heldout_accuracy": metrics.get("accuracy"),
        "heldout_accuracy_population": metrics.get("accuracy_population"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="var/gpu-check/results.json", help="JSON file for the figures")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (tests the harness)")
    parser.add_argument("--steps", default="encode,fit,retrain", help="comma-separated subset")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        out.write_text(json.dumps({"skipped": "no CUDA device (torch.cuda.is_available() is False)"}) + "\n")
        print(f"gpu_check: skipped, no CUDA device; wrote {out}")
        return 0
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "quick": args.quick,
    }
    steps = {s.strip() for s in args.steps.split(",") if s.strip()}
    if "encode" in steps:
        result["encode"] = bench_encode(args.device, args.quick)
        print("encode", result["encode"], flush=True)
    if "fit" in steps:
        result["fit"] = bench_fit(args.device, args.quick)
        print("fit", result["fit"], flush=True)
    if "retrain" in steps:
        result["retrain"] = bench_retrain(args.device, args.quick, out.parent / "deployment")
        print("retrain", result["retrain"], flush=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gpu_check: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
