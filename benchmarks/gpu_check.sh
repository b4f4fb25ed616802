#!/usr/bin/env bash
# One prepared GPU check (issue 14): the CUDA tests, then encode / fit / retrain-through-a-gpu-worker figures.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: var/gpu-check
#
# Writes OUT_DIR/results.json (figures), OUT_DIR/pytest.log and OUT_DIR/gpu_check.log. Without CUDA it
# writes {"skipped": ...} and exits 0 (CI has no GPU). Needs no PostgreSQL or Redis: the retrain runs a real
# Celery worker on SQLite + kombu's filesystem broker (config/settings/gpu_check.py).
#
# Python: $PYTHON, else .venv/bin/python, else python3. A lent GPU machine has its own Python (3.12) with
# torch but without Django, Celery and the rest: download their wheels here into .whl/ (see
# /work/.library/device/README.md) and carry .whl; this script installs them into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-var/gpu-check}
mkdir -p "$out"
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo '{"skipped": "no CUDA device (torch.cuda.is_available() is False)"}' > "$out/results.json"
  echo "gpu_check: no CUDA device; skipped (wrote $out/results.json)"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/nvidia-smi.txt" 2>&1 || true

status=0
# The CUDA tests (they skip on CPU machines; here they must run). No database is needed by them.
timeout 240 "$py" -m pytest tests/personalization -k cuda -q -p no:cacheprovider 2>&1 | tee "$out/pytest.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 360 "$py" benchmarks/gpu_check.py --device cuda --out "$out/results.json" 2>&1 | tee "$out/gpu_check.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
