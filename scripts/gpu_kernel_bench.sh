#!/usr/bin/env bash
# The kernel comparisons behind the engine's GPU defaults, first measured on an H100 on 2026-11-28
# (docs/performance.md): the Triton Adam kernel (the default on CUDA) against PyTorch's fused Adam,
# Box–Muller's cosine and sine from one shared angle reduction (the default, GNI_NOISE_TRIG=shared)
# against libdevice's, and the noisy forward kernels with the other number of warps a program; and,
# not yet run on a card, the fused GEMM's kernels under each tile against the default's hidden
# layer (benchmarks/gemm_tiles.py: is the fused GEMM worth its sweep?).
# Writes under ${OUT:-bench-out}/: gpu_checks.json (kernel checks and the Adam timing), gemm_tiles.json,
# noise_cost_{shared,libdevice}.json, and the reference TF32 sweep (1,024 runs) three ways:
# batching_tf32.json (the defaults), batching_tf32_libdevice_trig.json and
# batching_tf32_torch_adam.json, then gpu_bench.json gathering them. BUDGET_S (default 540) caps the
# whole script. Caps from the H100 (a cold Triton cache): a TF32 sweep 71 s, more than 80 s where it
# compiles another trig variant's kernels.
set -uo pipefail
DEFAULT_BUDGET_S=540
source "$(dirname "$0")/gpu_common.sh"  # $out, $py, $budget, run()
run 50 benchmarks/gpu_checks.py --only-kernel-checks --json "$out/gpu_checks.json"
run 120 benchmarks/gemm_tiles.py --json "$out/gemm_tiles.json"
for trig in shared libdevice; do
  GNI_NOISE_TRIG=$trig run 40 benchmarks/noise_cost.py --json "$out/noise_cost_$trig.json"
done
sweep=(benchmarks/batching.py --seq-runs 1 --runs 1024 --modes gni --precision tf32)
run 90 "${sweep[@]}" --json "$out/batching_tf32.json"
GNI_NOISE_TRIG=libdevice run 100 "${sweep[@]}" --json "$out/batching_tf32_libdevice_trig.json"
run 90 "${sweep[@]}" --adam-kernel torch --json "$out/batching_tf32_torch_adam.json"
"$py" benchmarks/collect_gpu_results.py "$out"
echo "== done in $SECONDS s"
