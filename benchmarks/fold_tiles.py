"""The folded kernels' backward tiles on a GPU: which configuration, and what it gives a sweep.

On an H200 (2026-11-27) ``fused_gemm="fold"`` was first slower than cuBLAS + the fused activation
kernel although it moves less data: its backward kernel, unrolled over row chunks and summing each,
took 4.4 ms a step for the output layer and 0.74 ms for the first layer, where the bytes moved
allow ~0.5 and ~0.25. This script times that kernel (first layer, a hidden layer, the last hidden
layer with the output layer folded in) at the reference sweep's size under several
:class:`~gni_engine.folded_activation_triton.TileConfig` s, checks each against the unrolled
one's result (another summation order: rounding-level differences), times the forward kernels and
a plain elementwise pass (the card's bandwidth) for scale, checks the fastest against its
definition, then trains the reference sweep with the folded kernels in the fastest configuration
and with cuBLAS + the fused activation kernel (``fused_gemm="off"``), in this process.

    python benchmarks/fold_tiles.py --json out.json [--runs 1024] [--sweeps tf32:1024,fp32:256]
    TRITON_INTERPRET=1 python benchmarks/fold_tiles.py --smoke --json /tmp/t.json   # CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from batching import flops_per_run, sweep, time_training  # this folder's sweep
from timing import median_ms

from gni_engine import folded_activation_triton as folded
from gni_engine.folded_activation_triton import TileConfig
from gni_engine.folded_check_triton import compare_fold_with_reference

DEVICE = "cuda"
SIZES = {"points": 1024, "width": 256, "steps": 2000}
UNROLLED = TileConfig(rolled=False, sum_at_end=False)  # the first configuration, measured slow
CONFIGS = {  # the first is the reference the others' results are compared with
    "unrolled": UNROLLED,
    "rolled+sum_at_end (default)": TileConfig(rolled=True, sum_at_end=True),
    "unrolled+sum_at_end": TileConfig(rolled=False, sum_at_end=True),
    "rolled": TileConfig(rolled=True, sum_at_end=False),
    "one_chunk": TileConfig(max_chunks=1, sum_at_end=False),
    "one_chunk/8_warps": TileConfig(max_chunks=1, num_warps=8, sum_at_end=False),
    "rolled+sum_at_end/8_warps": TileConfig(rolled=True, sum_at_end=True, num_warps=8),
    "4096_values/rolled+sum_at_end/8_warps": TileConfig(
        tile_values=4096, rolled=True, sum_at_end=True, num_warps=8
    ),
}


def cuda_ms(work: Callable[[], object], repeats: int = 10) -> float:
    """Median milliseconds of ``work`` on the device (after one warm-up call, which compiles)."""
    return median_ms(work, DEVICE, repeats)


def layer_tensors(runs: int, points: int, width: int, device: str | None = None) -> dict[str, torch.Tensor]:
    """A reference-sized layer's tensors on the GPU (or ``device``): inputs, pre-activations,
    gradients, parameters, the runs' noise (additive σ 0.1) and their streams."""
    device = device or DEVICE
    gen = torch.Generator(device=device).manual_seed(0)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, generator=gen)

    return {
        "x": normal(runs, points, 1),
        "w_first": normal(runs, 1, width),
        "bias": normal(runs, 1, width) * 0.1,
        "z": normal(runs, points, width),
        "g": normal(runs, points, width) * 1e-3,
        "w_out": normal(runs, width, 1) / width**0.5,
        "b_out": normal(runs, 1, 1),
        "g_out": normal(runs, points, 1) * 1e-3,
        "additive": torch.full((runs,), 0.1, device=device),
        "multiplicative": torch.zeros(runs, device=device),
        "keys": torch.arange(runs, device=device, dtype=torch.int64) * 7919 + 3,
        "starts": torch.arange(runs, device=device, dtype=torch.int64) * (points * width),
    }


def backward_calls(t: dict[str, torch.Tensor]) -> dict[str, Callable[[TileConfig], Any]]:
    """The three backward passes of a trained ReLU network with additive noise, by layer kind."""
    noise_args = (t["additive"], t["multiplicative"], t["keys"], t["starts"], 0, 1.0)
    flags = {"relu": True, "noise": True, "mult_noise": False}
    return {
        "first": lambda c: folded._gradient_tiles(
            t["g"], t["x"], t["w_first"], t["bias"], noise_args, store=False, sum_bias=True, config=c, **flags
        ),
        "hidden": lambda c: folded._gradient_tiles(
            t["g"], t["z"], None, t["bias"], noise_args, store=True, sum_bias=True, config=c, **flags
        ),
        "last": lambda c: folded._gradient_tiles(
            None,
            t["z"],
            None,
            t["bias"],
            noise_args,
            store=True,
            sum_bias=True,
            config=c,
            output=(t["g_out"], t["w_out"]),
            **flags,
        ),
    }


def relative_difference(ours: tuple[Any, ...], theirs: tuple[Any, ...]) -> float:
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if a is not None:
            worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)))
    return worst


def tile_timings(t: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    calls = backward_calls(t)
    reference = {kind: call(UNROLLED) for kind, call in calls.items()}
    out: dict[str, dict[str, Any]] = {}
    for name, config in CONFIGS.items():
        row: dict[str, Any] = {}
        for kind, call in calls.items():
            row[f"{kind}_ms"] = cuda_ms(lambda: call(config))  # noqa: B023
            row[f"{kind}_difference"] = relative_difference(call(config), reference[kind])
        row["total_ms"] = row["first_ms"] + 2 * row["hidden_ms"] + row["last_ms"]  # one step's four
        out[name] = row
        print(
            f"{name:40s} first {row['first_ms']:.3f}  hidden {row['hidden_ms']:.3f}  last "
            f"{row['last_ms']:.3f}  step's four {row['total_ms']:.3f} ms  (vs unrolled "
            f"{max(row[f'{k}_difference'] for k in calls):.1e})",
            flush=True,
        )
    return out


def forward_timings(t: dict[str, torch.Tensor]) -> dict[str, float]:
    """The forward kernels (no autograd) and an elementwise pass reading 2 and writing 1 GiB-sized
    tensor, for the card's bandwidth."""
    settings = (True, t["additive"], t["multiplicative"], t["keys"], t["starts"], 0, 1.0, True, False)
    out = torch.empty_like(t["z"])
    first, hidden, last = folded._FoldedFirstLayer, folded._FoldedActivation, folded._FoldedLastLayer
    with torch.no_grad():
        timings = {
            "first_forward_ms": cuda_ms(lambda: first.apply(t["x"], t["w_first"], t["bias"], *settings)),
            "hidden_forward_ms": cuda_ms(lambda: hidden.apply(t["z"], t["bias"], *settings)),
            "last_forward_ms": cuda_ms(
                lambda: last.apply(t["z"], t["bias"], t["w_out"], t["b_out"], *settings)
            ),
            "add_ms": cuda_ms(lambda: torch.add(t["z"], t["g"], out=out)),
        }
    timings["bandwidth_tb_per_s"] = 3 * t["z"].numel() * 4 / (timings["add_ms"] * 1e-3) / 1e12
    print({k: round(v, 3) for k, v in timings.items()}, flush=True)
    return timings


def sweep_rates(sweeps: str, config: TileConfig) -> list[dict[str, Any]]:
    """runs/s of the reference sweep (2000 steps, gni): the folded kernels with ``config``, then
    cuBLAS + the fused activation kernel, one after the other in this process."""
    results = []
    for item in sweeps.split(","):
        precision, runs = item.split(":")
        args = argparse.Namespace(runs=int(runs), hidden=4, device=DEVICE, precision=precision, **SIZES)
        specs = sweep(args, "gni")
        for kernels in ("fold", "off"):
            os.environ["GNI_FUSED_GEMM"] = kernels
            folded.TILES = config
            streams: set[str] = set()
            seconds = time_training(specs, streams)
            rate = len(specs) / seconds
            row = {
                "precision": precision,
                "runs": len(specs),
                "fused_gemm": kernels,
                "runs_per_s": rate,
                "tflops": flops_per_run(args) * rate / 1e12,
                "seconds": seconds,
                "noise_streams": sorted(streams),
            }
            print(row, flush=True)
            results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--runs", type=int, default=1024, help="runs in the kernel timings")
    parser.add_argument("--sweeps", default="tf32:1024,fp32:256", help="precision:runs, … ('' for none)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (Triton's interpreter)")
    args = parser.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        SIZES.update(points=48, width=8, steps=3)
        args.runs = 3
        args.sweeps = "fp32:3"
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    result: dict[str, Any] = {"device": name, "torch": torch.__version__}
    start = time.perf_counter()
    t = layer_tensors(args.runs, SIZES["points"], SIZES["width"])
    result["forward"] = forward_timings(t)
    result["tiles"] = tile_timings(t)
    del t
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    best = min(result["tiles"], key=lambda name: result["tiles"][name]["total_ms"])
    result["best"] = best
    print(f"fastest: {best} ({time.perf_counter() - start:.0f} s so far)", flush=True)
    folded.TILES = CONFIGS[best]
    checked = compare_fold_with_reference(DEVICE, every_variant=False)
    result["best_vs_definition"] = max(v for k, v in checked.items() if k != "nan_kept")
    result["best_nan_kept"] = checked["nan_kept"]
    print(f"{best} vs its definition: {result['best_vs_definition']:.2e}", flush=True)
    with open(args.json, "w") as f:  # what is measured so far survives a cut sweep
        json.dump(result, f, indent=2)
    if args.sweeps:
        result["sweeps"] = sweep_rates(args.sweeps, CONFIGS[best])
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
