# Sourced by the GPU benchmark scripts (gpu_bench.sh, gpu_kernel_bench.sh) after they set
# DEFAULT_BUDGET_S: the output folder ($out), the interpreter ($py), the budget ($budget, from
# BUDGET_S), the card and software versions in $out/gpu.txt, and run(), which caps each step.
# The scripts write up to a dozen files; where only a few can come back from a lent machine, point
# OUT at a scratch folder and bring back gpu_bench.json (which gathers them all), gpu.txt and a tarball.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-bench-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
budget="${BUDGET_S:-$DEFAULT_BUDGET_S}"
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
