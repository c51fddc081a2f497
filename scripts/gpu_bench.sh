#!/usr/bin/env bash
# The batching benchmark, its plain-PyTorch anchors and the GPU checks on a GPU machine, in one go
# (< 8 minutes). Writes results under ${OUT:-bench-out}/ (gpu_bench.json gathering them all, a JSON
# per benchmark, the anchor's output). Copy ../shared/bench/anchor_bench.py into .bench/ first (an
# ignored folder) to measure the anchors on the same card in the same call. BUDGET_S (default 460)
# caps the whole script: each step gets at most what is left, so a slow step cannot eat the next
# one's results. Order: the issue's figures first — the reference sweep in TF32 (1,024 runs) and
# fp32 (256 runs, gni and explicit) with the default kernels (cuBLAS products, the folded activation
# kernels, the Triton Adam kernel, the shared trig) — then the eager anchors, the GPU checks (kernels
# against their definitions, batches against runs alone, graph-replayed steps against eager ones,
# divergence, profiles). Caps from an H100 on 2026-11-28 (a cold Triton cache: each sweep's warm-up
# compiles its kernels): TF32 sweep 71 s, fp32 91 s, anchors 45 + 92 s. What budget is left goes to
# the TF32 sweep with PyTorch's fused Adam, the same sweeps with cuBLAS and the fused activation
# kernel (fused_gemm=off, the previous default), the compiled anchors and single-run step times.
# FUSED_GEMM=1 adds the fused GEMM's checks, profiles and sweeps (its autotuning compiled for 3
# minutes on an H200, where it ran at half the default's speed with tile candidates that spilled
# registers; with the non-spilling candidates that replaced them, its TF32 sweep had not finished
# within 150 s on an H100 on 2026-11-28, so it now gets 300 s).
set -uo pipefail
DEFAULT_BUDGET_S=460
source "$(dirname "$0")/gpu_common.sh"  # $out, $py, $budget, run()
sweep=(benchmarks/batching.py --seq-runs 1)
anchor=(.bench/anchor_bench.py --seq-runs 1)
run 95 "${sweep[@]}" --runs 1024 --modes gni --precision tf32 --json "$out/batching_tf32.json"
run 110 "${sweep[@]}" --runs 256 --modes gni,explicit --precision fp32 --json "$out/batching_fp32.json"
if [ -f .bench/anchor_bench.py ]; then  # the plain-PyTorch anchors, same card, same call
  { run 60 "${anchor[@]}" --batch-sizes 256 && run 110 "${anchor[@]}" --tf32 --batch-sizes 1024; } > "$out/anchor.txt" 2>&1
  grep -A3 SUMMARY "$out/anchor.txt"
fi
checks=(benchmarks/gpu_checks.py --json "$out/gpu_checks.json" --profile-runs 256)
[ "${FUSED_GEMM:-0}" = 1 ] && checks+=(--fused-gemm)
run 110 "${checks[@]}"
# what budget is left: PyTorch's fused Adam (the previous default), the previous hidden-layer
# kernels, the anchor's compiled loops, single-run step times
run 75 "${sweep[@]}" --runs 1024 --modes gni --precision tf32 --adam-kernel torch --json "$out/batching_tf32_torch_adam.json"
run 75 "${sweep[@]}" --runs 1024 --modes gni --precision tf32 --fused-gemm off --json "$out/batching_tf32_off.json"
run 40 "${sweep[@]}" --runs 256 --modes gni --precision fp32 --fused-gemm off --json "$out/batching_fp32_off.json"
if [ -f .bench/anchor_bench.py ]; then
  run 90 "${anchor[@]}" --batch-sizes 1 --compiled-sizes 256 > "$out/anchor_compiled.txt" 2>&1
  grep -A4 SUMMARY "$out/anchor_compiled.txt"
fi
run 30 benchmarks/step_times.py --repeats 30 --json "$out/step_times.json"
if [ "${FUSED_GEMM:-0}" = 1 ]; then
  run 300 "${sweep[@]}" --runs 1024 --modes gni --precision tf32 --fused-gemm on --json "$out/batching_tf32_fused_gemm.json"
  run 90 "${sweep[@]}" --runs 256 --modes gni --precision fp32 --fused-gemm tf32x3 --json "$out/batching_fp32_fused_gemm.json"
fi
"$py" benchmarks/collect_gpu_results.py "$out"  # one JSON of everything, ratios within this call
echo "== done in $SECONDS s"
