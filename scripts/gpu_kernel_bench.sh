#!/usr/bin/env bash
# The kernel comparisons behind choices not yet measured on a card (built 2026-11-27 without one):
# the Triton Adam kernel (the default on CUDA) against PyTorch's fused Adam, and Box–Muller's cosine
# and sine from one shared angle reduction (GNI_NOISE_TRIG=shared, opt-in) against libdevice's, and
# the noisy forward kernels with 8 warps a program against 4 (half the registers a thread).
# Writes under ${OUT:-bench-out}/: gpu_checks.json (kernel checks and the Adam timing),
# noise_cost_{libdevice,shared}.json, and the reference TF32 sweep (1,024 runs) three ways:
# batching_tf32.json (the defaults), batching_tf32_shared_trig.json and batching_tf32_torch_adam.json,
# then gpu_bench.json gathering them. BUDGET_S (default 330) caps the whole script. Run it before
# scripts/gpu_bench.sh when a lease has room for both (~330 + 460 s).
set -uo pipefail
DEFAULT_BUDGET_S=330
source "$(dirname "$0")/gpu_common.sh"  # $out, $py, $budget, run()
run 50 benchmarks/gpu_checks.py --only-kernel-checks --json "$out/gpu_checks.json"
for trig in libdevice shared; do
  GNI_NOISE_TRIG=$trig run 40 benchmarks/noise_cost.py --json "$out/noise_cost_$trig.json"
done
sweep=(benchmarks/batching.py --seq-runs 1 --runs 1024 --modes gni --precision tf32)
run 80 "${sweep[@]}" --json "$out/batching_tf32.json"
GNI_NOISE_TRIG=shared run 80 "${sweep[@]}" --json "$out/batching_tf32_shared_trig.json"
run 80 "${sweep[@]}" --adam-kernel torch --json "$out/batching_tf32_torch_adam.json"
"$py" benchmarks/collect_gpu_results.py "$out"
echo "== done in $SECONDS s"
