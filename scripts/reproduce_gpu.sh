#!/usr/bin/env bash
# Every preset at the paper's settings on one GPU, then docs/reproduction.md from those runs.
#
# UNTESTED ON A GPU: written on a CPU-only machine. Expected cost on one H100 (estimated from FLOP
# counts, not measured): spectral-bias 15 stacked runs × 60,000 full-batch steps of a 1-256-4x256-1
# MLP on 200 points is ~3·10^14 FLOP with the explicit arm, a few minutes; the others are small.
# A time limit per preset keeps the whole script bounded; a preset that runs out is reported as "Not run".
#
#   bash scripts/reproduce_gpu.sh [OUT_DIR]      (default runs/reproduction-paper)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/reproduction-paper}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: run scripts/reproduce.py --scale cpu instead"
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
# Presets run on GPU automatically (execution.device = auto). TF32 stays off: fp32 as in the paper.
# Limits (s) keep the total under ~8 minutes: spectral-bias 270, the others 70 each.
for preset in spectral-bias regulariser-validity explicit-vs-gni calibration-margins; do
  echo "== $preset"
  limit=70; [ "$preset" = spectral-bias ] && limit=270
  timeout "${GNI_PRESET_TIMEOUT:-$limit}" "$PY" -m gni_cli.main run --preset "$preset" --out "$OUT/$preset" \
    || echo "!! $preset did not finish (exit $?)"
done
"$PY" scripts/reproduce.py --scale paper --out "$OUT" --report-only --report "${REPORT:-docs/reproduction.md}"
