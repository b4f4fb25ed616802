"""benchmarks/gpu_check.sh: skips cleanly without CUDA, and its harness runs end to end (on the CPU here).

The harness is run as a subprocess, as on a lent GPU machine: it makes its own SQLite deployment under a
temporary folder and starts a real Celery worker process on kombu's filesystem broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_it_skips_cleanly_without_cuda(tmp_path: Path) -> None:
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 0, run.stderr
    assert "skipped" in run.stdout
    assert "no CUDA" in json.loads((tmp_path / "results.json").read_text())["skipped"]


@pytest.mark.slow
@pytest.mark.worker
def test_it_measures_encode_fit_and_a_retrain_through_a_real_worker(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=540, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["encode"]["texts_per_s_64_tokens"] > 0 and result["encode"]["texts_per_s_256_tokens"] > 0
    assert result["fit"]["pairs"] == 400 and result["fit"]["vpl_fit_s"] > 0
    # The retrain was done by the worker process: the version it trained is settled, with held-out metrics.
    assert result["retrain"]["status"] in {"active", "ready"}
    assert result["retrain"]["judgments"] > 0
    assert 0.0 <= result["retrain"]["heldout_accuracy"] <= 1.0
    assert "succeeded" in (tmp_path / "deployment" / "worker.log").read_text()
