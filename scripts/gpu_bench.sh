#!/usr/bin/env bash
# The batching and step-time benchmarks on a GPU machine, in one go (< 8 minutes on one H100).
# Writes JSON results under ${OUT:-bench-out}/. Copy ../shared/bench/anchor_bench.py into .bench/ first
# (an ignored folder) to measure the plain-PyTorch anchors on the same card in the same call.
# Untested on a GPU so far: no GPU machine was lent to the session that wrote it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
run() { echo "== $*"; timeout 150 "$py" "$@" || echo "(exit $?)"; }
run benchmarks/step_times.py --json "$out/step_times.json"
run benchmarks/batching.py --runs 256 --seq-runs 2 --modes gni,explicit --precision fp32 --json "$out/batching_fp32.json"
run benchmarks/batching.py --runs 1024 --seq-runs 1 --modes gni --precision tf32 --json "$out/batching_tf32.json"
if [ -f .bench/anchor_bench.py ]; then
  run .bench/anchor_bench.py --seq-runs 2 --batch-sizes 256 --compiled-sizes 256 > "$out/anchor.txt" 2>&1
  tail -5 "$out/anchor.txt"
fi
