"""Where the noisy kernels' time goes: drawing the noise, or moving the activations.

On an H200 (2026-11-27) the folded forward kernels took 0.82–0.91 ms at the reference sweep's size,
where their bytes need ~0.5 ms: the draws (Philox4x32-10, then Box–Muller's log, square root,
cosine and sine), not memory, bound them. This times, at that size (1,024 runs × 1,024 points ×
256, fp32; median of 10 after a compiling call), with this process's ``GNI_NOISE_TRIG``:

* the normals alone (draw and write 1 GiB) against writing 1 GiB (``fill_``);
* each folded forward kernel with its noise and with the noise switched off (the same kernel's
  traffic without the draws);
* the output layer's backward kernel, which draws the noise again to recompute h;
* the first and hidden layers' forward kernels with the other number of warps a program (the first
  layer's with 8 instead of its 4, the hidden layers' with 4 instead of their 8: 116 registers a
  thread with 4, 58 with 8, for sm_90, ``benchmarks/compile_check.py``), and whether their outputs
  stay bit for bit the same (they should: no value depends on the thread layout);

and measures both trig variants' accuracy on the card (all 2²⁴ angles a draw can take). Run it once
per variant and compare the two JSON files:

    GNI_NOISE_TRIG=libdevice python benchmarks/noise_cost.py --json noise_libdevice.json
    GNI_NOISE_TRIG=shared    python benchmarks/noise_cost.py --json noise_shared.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from fold_tiles import backward_calls, layer_tensors  # this folder's
from timing import machine, median_ms, write_result

from gni_engine import counter_activation_triton as activation
from gni_engine import folded_activation_triton as folded
from gni_engine.counter_noise_triton import STREAM_LABEL, counter_normals_gpu, trig_errors


def kernel_timings(t: dict[str, torch.Tensor], device: str) -> dict[str, float]:
    """Milliseconds of each kernel with and without its noise, the normals alone and a 1 GiB fill."""
    noise_args = (t["additive"], t["multiplicative"], t["keys"], t["starts"], 0, 1.0)

    def settings(noise: bool) -> tuple[Any, ...]:
        return (True, *noise_args, noise, False)

    first, hidden, last = folded._FoldedFirstLayer, folded._FoldedActivation, folded._FoldedLastLayer
    values = t["z"][0].numel()
    filled = torch.empty_like(t["z"])
    out: dict[str, float] = {}
    with torch.no_grad():
        out["normals_ms"] = median_ms(lambda: counter_normals_gpu(t["keys"], t["starts"], values), device)
        out["fill_ms"] = median_ms(lambda: filled.fill_(1.0), device)
        for noise in (True, False):
            suffix = "" if noise else "_without_noise"
            out[f"first_forward{suffix}_ms"] = median_ms(
                lambda n=noise: first.apply(t["x"], t["w_first"], t["bias"], *settings(n)), device
            )
            out[f"hidden_forward{suffix}_ms"] = median_ms(
                lambda n=noise: hidden.apply(t["z"], t["bias"], *settings(n)), device
            )
            out[f"last_forward{suffix}_ms"] = median_ms(
                lambda n=noise: last.apply(t["z"], t["bias"], t["w_out"], t["b_out"], *settings(n)), device
            )
        out.update(
            warps_timings(
                {
                    "first_forward": (
                        "NUM_WARPS",
                        lambda: first.apply(t["x"], t["w_first"], t["bias"], *settings(True)),
                    ),
                    "hidden_forward": (
                        "HIDDEN_FORWARD_NUM_WARPS",
                        lambda: hidden.apply(t["z"], t["bias"], *settings(True)),
                    ),
                },
                device,
            )
        )
    last_backward = backward_calls(t)["last"]
    out["last_backward_ms"] = median_ms(lambda: last_backward(folded.TILES), device)
    gib = t["z"].numel() * 4 / 2**30
    out["normals_g_per_s"] = t["z"].numel() / (out["normals_ms"] * 1e-3) / 1e9
    out["fill_tb_per_s"] = gib * 2**30 / (out["fill_ms"] * 1e-3) / 1e12
    return out


def warps_timings(calls: dict[str, tuple[str, Callable[[], torch.Tensor]]], device: str) -> dict[str, float]:
    """Noisy forward kernels of :mod:`gni_engine.counter_activation_triton` with the other number of
    warps a program (4 ↔ 8; each call names the module constant its launch reads), and whether their
    outputs equal the default's bit for bit. Keys: ``{name}_{warps}_warps_ms``."""
    out: dict[str, float] = {}
    for name, (constant, call) in calls.items():
        reference = call()
        default = getattr(activation, constant)
        other = 8 if default == 4 else 4
        setattr(activation, constant, other)
        try:
            out[f"{name}_{other}_warps_ms"] = median_ms(call, device)
            out[f"{name}_{other}_warps_identical"] = float(torch.equal(call(), reference))
        finally:
            setattr(activation, constant, default)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--runs", type=int, default=1024)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (Triton's interpreter)")
    args = parser.parse_args()
    device, points, width = ("cpu", 48, 8) if args.smoke else ("cuda", 1024, 256)
    runs = 3 if args.smoke else args.runs
    start = time.perf_counter()
    result: dict[str, Any] = {
        **machine(device),
        "noise_stream": STREAM_LABEL,
        "size": {"runs": runs, "points": points, "width": width},
    }
    result["trig_errors"] = trig_errors(device)
    print(f"{STREAM_LABEL}: cos/sin errors over every angle {result['trig_errors']}", flush=True)
    t = layer_tensors(runs, points, width, device)
    result["ms"] = kernel_timings(t, device)
    print({k: round(v, 3) for k, v in result["ms"].items()}, flush=True)
    write_result(args.json, result, start)


if __name__ == "__main__":
    main()
