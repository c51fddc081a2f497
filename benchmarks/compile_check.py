"""Compile every Triton kernel variant the GPU checks launch, for a card this machine does not have.

Triton's CPU interpreter runs the kernels' Python, not their compilation: a kernel can pass every
interpreter test and still fail to compile, or spill registers, on a GPU. This runs, under the
interpreter with the tile and block sizes a GPU uses (the modules choose smaller ones when they see
the interpreter; :data:`GPU_SIZES` puts the GPU's back), the kernel checks of
``benchmarks/gpu_checks.py`` (counter noise, the folded kernels, Adam) at their smoke sizes and two
steps of two runs of the reference network (1 → 256 × 4 → 1, fp32, TF32 and fp64, the folded
kernels and the Adam kernel), records each distinct launch (kernel, argument types, constexpr
values, launch options), then compiles each one for the chosen architecture (default sm_90, an
H100's or H200's) with Triton's own compiler and its bundled ``ptxas``, and reports registers,
stack and spills. It exits non-zero when a variant fails to compile.

``--kernels fused-gemm`` checks the opt-in fused GEMM (``fused_gemm="on"`` / ``"tf32x3"``,
:mod:`gni_engine.fused_linear_triton`) instead: two steps of the reference network trained with it
(IEEE fp32, TF32 and three-TF32 products; additive noise, and a batch with a multiplicative run),
each recorded launch compiled once per autotuning candidate (its tile and launch options from
``TILE_CANDIDATES``) at the reference sweep's shape. The interpreter runs these GEMMs slowly, so the
recording trains 1 → 16 × 4 → 1 on 16 points; the kernels' sizes are compile-time constants, set
to the sweep's 1,024 points and width 256 before compiling.

    python benchmarks/compile_check.py --json out.json [--arch 90] [--kernels fused-gemm]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TENSOR_TYPES = {
    "float32": "fp32",
    "float64": "fp64",
    "float16": "fp16",
    "bfloat16": "bf16",
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "uint8": "u8",
    "bool": "i1",
}
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
GPU_SIZES = {  # module: the constants it sets to other values under the interpreter
    "gni_engine.folded_activation_triton": {
        "TILE_VALUES": 2048,
        "MAX_TILE_COLUMNS": 128,
        "MIN_ROW_PROGRAMS": 8,
    },
    "gni_engine.stacked_adam_triton": {"BLOCK": 2048},
}
REFERENCE_POINTS, REFERENCE_WIDTH = 1024, 256  # the reference sweep's examples and hidden width
RECORDING_WIDTH = 16  # the fused GEMM's recording trains this width (the interpreter's tile)
FUSED_GEMM_MODULE = "gni_engine.fused_linear_triton"
REFERENCE_RUN: dict[str, Any] = {
    "data": {"name": "sinusoids", "n_points": 16, "frequencies": [1.0, 3.0]},
    "model": {"hidden": [256] * 4, "activation": "relu"},
    "noise": {"sigma": 0.1, "layers": "all"},
    "training": {"steps": 2},
}


def argument_type(value: Any) -> str:
    """Triton's signature type for a launch argument (its JIT's rules, without specialisation)."""
    import torch

    if isinstance(value, torch.Tensor):
        return "*" + TENSOR_TYPES[str(value.dtype).removeprefix("torch.")]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else ("i64" if value < 2**63 else "u64")
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for a launch argument of type {type(value).__name__}")


def _constexpr_names(fn: Any) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(fn).parameters.items()
        if "constexpr" in str(parameter.annotation)
    }


def record_launches(out: Path, kernels: str) -> None:
    """Run the kernel checks (``kernels="default"``) or the fused GEMM's training steps
    (``"fused-gemm"``) under the interpreter, writing each distinct launch to ``out``."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--record runs under TRITON_INTERPRET=1")
    from triton.runtime.interpreter import InterpretedFunction

    launches: dict[str, dict[str, Any]] = {}
    run = InterpretedFunction.run

    def recording_run(self: Any, *args: Any, grid: Any, warmup: Any, **kwargs: Any) -> Any:
        constexprs = _constexpr_names(self.fn)
        bound = dict(zip(self.arg_names, args, strict=False))
        bound.update({k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS})
        launch = {
            "module": self.fn.__module__,
            "kernel": self.fn.__name__,
            "signature": {
                name: "constexpr" if name in constexprs or value is None else argument_type(value)
                for name, value in bound.items()
            },
            "constexprs": {name: value for name, value in bound.items() if name in constexprs},
            "options": {k: v for k, v in kwargs.items() if k in LAUNCH_OPTIONS},
        }
        launches.setdefault(json.dumps(launch, sort_keys=True), launch)
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run  # type: ignore[method-assign]
    for module, constants in GPU_SIZES.items():
        loaded = importlib.import_module(module)
        for name, value in constants.items():
            if not hasattr(loaded, name):
                raise SystemExit(f"{module} has no {name}: update compile_check.GPU_SIZES")
            setattr(loaded, name, value)
    if kernels == "fused-gemm":
        train_with_fused_gemm()
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        import gpu_checks  # this folder's

        gpu_checks.DEVICE, gpu_checks.SMOKE = "cpu", True
        gpu_checks.counter_kernel()
        gpu_checks.folded_kernel()
        gpu_checks.adam_kernel(4)
        train_reference_network()
    out.write_text(json.dumps(list(launches.values()), indent=1))


def _reference_batch(
    precision: str, kinds: tuple[str, ...] = ("additive", "additive"), width: int = REFERENCE_WIDTH
) -> list[Any]:
    from gni_engine.spec import parse_run_spec

    return [
        parse_run_spec(
            {
                **REFERENCE_RUN,
                "model": {**REFERENCE_RUN["model"], "hidden": [width] * 4},
                "noise": {**REFERENCE_RUN["noise"], "kind": kind},
                "execution": {"precision": precision},
                "seed": seed,
            }
        )
        for seed, kind in enumerate(kinds)
    ]


def train_reference_network() -> None:
    """Two steps of two runs of the reference network with the GPU's default kernels, per precision."""
    from gni_engine.training import BatchTrainer

    for precision in ("fp32", "tf32", "fp64"):
        BatchTrainer(
            _reference_batch(precision), noise_stream="counter", fused_gemm="fold", adam_kernel="triton"
        ).run()


def train_with_fused_gemm() -> None:
    """Two steps of the reference network with the fused GEMM in each arithmetic of its products,
    additive runs and a batch with a multiplicative run (its backward regenerates ε)."""
    from gni_engine.training import BatchTrainer

    for precision, fused_gemm in (("fp32", "on"), ("tf32", "on"), ("fp32", "tf32x3")):
        for kinds in (("additive", "additive"), ("additive", "multiplicative")):
            BatchTrainer(
                _reference_batch(precision, kinds, RECORDING_WIDTH),
                noise_stream="counter",
                fused_gemm=fused_gemm,
            ).run()


def tile_candidates(launch: dict[str, Any]) -> list[dict[str, Any]]:
    """A recorded fused-GEMM launch once per autotuning candidate, a training layer's at the
    reference sweep's shape (its points, and the recorded width replaced by the sweep's); the
    start-up check's own layers at their shapes; any other launch as it is."""
    if launch["module"] != FUSED_GEMM_MODULE:
        return [launch]
    candidates = importlib.import_module(FUSED_GEMM_MODULE).TILE_CANDIDATES[launch["kernel"]]
    recorded = launch["constexprs"]
    shape = {}
    if recorded["N"] == RECORDING_WIDTH:  # a hidden layer of the recorded network
        shape = {"M": REFERENCE_POINTS, "N": REFERENCE_WIDTH}
        if recorded["K"] == RECORDING_WIDTH:
            shape["K"] = REFERENCE_WIDTH
    return [
        {
            **launch,
            "constexprs": {**recorded, **shape, **config.kwargs},
            "options": {"num_warps": config.num_warps, "num_stages": config.num_stages},
        }
        for config in candidates
    ]


def _jit_function(module: str, name: str) -> Any:
    from triton.runtime.jit import JITFunction

    kernel = getattr(importlib.import_module(module), name)
    while not isinstance(kernel, JITFunction):  # an autotuner or heuristics wrapper
        kernel = kernel.fn
    return kernel


def triton_tool(name: str) -> Path:
    """One of the CUDA tools Triton's wheel bundles (``ptxas``, ``cuobjdump``, ``nvdisasm``)."""
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def compile_kernel(launch: dict[str, Any], arch: int) -> Any:
    """Triton's compiled kernel for one launch description (module, kernel, signature, constexprs,
    options) and sm_<arch>; the compiler's exception where it refuses."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(
        fn=_jit_function(launch["module"], launch["kernel"]),
        signature=launch["signature"],
        constexprs=launch["constexprs"],
    )
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=launch["options"])


def ptxas_report(ptx: str, arch: int) -> dict[str, int]:
    """Registers, stack frame and spill bytes as ``ptxas -v`` reports them."""
    ptxas = triton_tool("ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(ptx)
        source.flush()
        done = subprocess.run(
            [
                ptxas,
                f"-arch=sm_{arch}a" if arch >= 90 else f"-arch=sm_{arch}",
                "-v",
                source.name,
                "-o",
                os.devnull,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    text = done.stderr + done.stdout

    def figure(pattern: str) -> int:
        found = re.search(pattern, text)
        return int(found.group(1)) if found else 0

    return {
        "registers": figure(r"Used (\d+) registers"),
        "stack_bytes": figure(r"(\d+) bytes stack frame"),
        "spill_store_bytes": figure(r"(\d+) bytes spill stores"),
        "spill_load_bytes": figure(r"(\d+) bytes spill loads"),
    }


def compile_launch(launch: dict[str, Any], arch: int) -> dict[str, Any]:
    """Compile one recorded launch for sm_<arch>: its resource figures, or the compiler's error."""
    try:
        kernel = compile_kernel(launch, arch)
    except Exception as error:  # the compiler's message is the finding
        return {"compiled": False, "error": f"{type(error).__name__}: {str(error)[-1500:]}"}
    return {
        "compiled": True,
        "num_warps": kernel.metadata.num_warps,
        **ptxas_report(kernel.asm["ptx"], arch),
    }


def describe(launch: dict[str, Any]) -> str:
    types = sorted({t for t in launch["signature"].values() if t.startswith("*")})
    constexprs = ",".join(f"{k}={v}" for k, v in launch["constexprs"].items())
    options = "".join(f" {k}={v}" for k, v in launch["options"].items())
    return f"{launch['kernel']}[{' '.join(types)}]({constexprs}){options}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write every variant's result here")
    parser.add_argument("--arch", type=int, default=90, help="compute capability ×10 (90: H100/H200)")
    parser.add_argument(
        "--kernels",
        choices=("default", "fused-gemm"),
        default="default",
        help="the GPU checks' and the reference network's kernels, or the opt-in fused GEMM's",
    )
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)  # the interpreted child
    args = parser.parse_args()
    if args.record:
        record_launches(args.record, args.kernels)
        return
    with tempfile.TemporaryDirectory() as folder:
        recorded = Path(folder) / "launches.json"
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        done = subprocess.run(
            [sys.executable, __file__, "--record", str(recorded), "--kernels", args.kernels],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"recording the launches failed:\n{done.stderr[-3000:]}")
        launches = [c for launch in json.loads(recorded.read_text()) for c in tile_candidates(launch)]
    import triton

    results = []
    for launch in launches:
        result = {"variant": describe(launch), **launch, **compile_launch(launch, args.arch)}
        results.append(result)
        figures = (
            f"{result['registers']:>3} registers, stack {result['stack_bytes']} B, "
            f"spills {result['spill_store_bytes']}/{result['spill_load_bytes']} B"
            if result["compiled"]
            else "FAILED: " + result["error"].splitlines()[-1]
        )
        print(f"{result['variant']:<90} {figures}", flush=True)
    failed = [r["variant"] for r in results if not r["compiled"]]
    print(
        f"{len(results)} variants compiled for sm_{args.arch} with Triton {triton.__version__}; "
        f"failed: {len(failed)}"
    )
    if args.json:
        summary = {
            "arch": f"sm_{args.arch}",
            "kernels": args.kernels,
            "triton": triton.__version__,
            "failed": failed,
            "variants": results,
        }
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
