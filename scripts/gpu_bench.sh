#!/usr/bin/env bash
# The GPU checks and the batching / step-time benchmarks on a GPU machine, in one go (< 8 minutes).
# Writes results under ${OUT:-bench-out}/ (JSON per benchmark, the anchor's output, a log). Copy
# ../shared/bench/anchor_bench.py into .bench/ first (an ignored folder) to measure the plain-PyTorch
# anchors on the same card in the same call. BUDGET_S (default 440) caps the whole script: each
# step gets at most what is left, so a slow step cannot eat the next one's results.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
budget="${BUDGET_S:-440}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
"$py" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
run() {  # run CAP_SECONDS ARGS…: at most CAP seconds, and never past the script's budget
  local cap=$1; shift
  local left=$((budget - SECONDS))
  ((left < cap)) && cap=$left
  if ((cap < 10)); then echo "== skipped (budget spent): $*"; return; fi
  echo "== [$SECONDS s] $* (limit ${cap} s)"
  timeout "$cap" "$py" "$@" || echo "(exit $?)"
}
sweep=(benchmarks/batching.py --runs 256 --seq-runs 1)
run 90 benchmarks/gpu_checks.py --json "$out/gpu_checks.json" --profile-runs 256
run 120 "${sweep[@]}" --modes gni,explicit --precision fp32 --json "$out/batching_fp32.json"
export GNI_NOISE_STREAM=generator  # the same sweep with one torch.Generator draw per run (as before)
run 50 "${sweep[@]}" --modes gni --precision fp32 --json "$out/batching_fp32_generator.json"
unset GNI_NOISE_STREAM
run 90 benchmarks/batching.py --runs 1024 --seq-runs 1 --modes gni --precision tf32 --json "$out/batching_tf32.json"
if [ -f .bench/anchor_bench.py ]; then
  run 130 .bench/anchor_bench.py --tf32 --seq-runs 1 --batch-sizes 1024 --compiled-sizes 1024 > "$out/anchor_tf32.txt" 2>&1
  grep -A5 SUMMARY "$out/anchor_tf32.txt"
fi
run 40 benchmarks/step_times.py --repeats 30 --json "$out/step_times.json"
echo "== done in $SECONDS s"
