"""The fused GEMM's tiles on a GPU, kernel by kernel, against what the default does for the same layer.

The fused GEMM (``fused_gemm="on"``, :mod:`gni_engine.fused_linear_triton`) moves less data than the
default for a hidden layer: its forward writes h' and a one-byte ReLU mask instead of cuBLAS writing
z and the folded kernel reading z and writing h', and its backward builds g_z inside both GEMMs
instead of a kernel writing it between them — at the reference sweep's size (1,024 runs × 1,024
points × 256) about 6.75 instead of 11 GiB a layer and step. Yet its sweep ran at half the default's
speed on an H200 (2026-11-27, with tiles that spilled registers) and gave no figure within 150 s on
an H100 (2026-11-28; compiling its kernels takes seconds, so more likely its training was slow).
This times, for one hidden layer
of that size (ReLU, bias, additive noise σ = 0.1; median of 10 after compiling):

* the default's forward (cuBLAS ``bmm`` for z, then the folded kernel) and backward (the folded
  kernel writing g_z and summing the bias gradient, then ``bmm`` for dh and for dW);
* each of the fused GEMM's three kernels (forward, dh, dW) under every tile of
  :data:`~gni_engine.fused_linear_triton.TILE_CANDIDATES` and of :data:`MORE_TILES`, launched
  directly (no autotuner), each checked against the kernel's first tile (another summation order:
  rounding-level differences) and the fastest against the default's results;
* each kernel's fastest tile once more without its epilogue's noise (forward) or its prologue's
  ReLU mask (dh, dW): what the product alone costs, and so what the fused work adds;

all compiled first, in parallel (Triton's ``AsyncCompileMode`` over a thread pool), so that the
compilations cost a few kernels' time rather than thirty. It prints the layer's forward and
backward milliseconds both ways: where the fused GEMM's best tiles beat the default, the sweep with
``fused_gemm="on"`` is worth its time on a card, and its ``TILE_CANDIDATES`` should list them.

    python benchmarks/gemm_tiles.py --json out.json [--runs 1024] [--precision tf32]
    TRITON_INTERPRET=1 python benchmarks/gemm_tiles.py --smoke --json /tmp/t.json   # CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import triton
from fold_tiles import layer_tensors, relative_difference  # this folder's
from timing import machine, median_ms, write_result

from gni_engine import folded_activation_triton as folded
from gni_engine import fused_linear_triton as fused

KERNELS = ("_forward_kernel", "_grad_input_kernel", "_grad_weight_kernel")
# more tiles to try beside the candidates (BM, BN, BK, warps, stages): deeper pipelines and other
# shapes for K = 256; none spills when compiled for sm_90 (docs/performance.md). One that wins here
# belongs in TILE_CANDIDATES.
MORE_TILES: dict[str, list[tuple[int, int, int, int, int]]] = {
    "_forward_kernel": [(128, 64, 32, 4, 4), (64, 64, 64, 4, 3), (128, 32, 32, 4, 4)],
    "_grad_input_kernel": [(64, 32, 64, 4, 4), (128, 64, 64, 8, 3)],
    "_grad_weight_kernel": [(64, 64, 64, 4, 3), (32, 128, 64, 4, 3)],
}


def tiles(kernel: str) -> list[dict[str, int]]:
    """Every tile to time for ``kernel``: the autotuner's candidates first, then :data:`MORE_TILES`."""
    rows = [
        {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
        for config in fused.TILE_CANDIDATES[kernel]
    ]
    rows += [
        dict(zip(("BM", "BN", "BK", "num_warps", "num_stages"), t, strict=True)) for t in MORE_TILES[kernel]
    ]
    return rows


def tiles_by_name(kernel: str) -> dict[str, dict[str, int]]:
    return {tile_name(tile): tile for tile in tiles(kernel)}


def tile_name(tile: dict[str, int]) -> str:
    return f"{tile['BM']}x{tile['BN']}x{tile['BK']}/w{tile['num_warps']}/s{tile['num_stages']}"


class Layer:
    """One hidden layer's tensors (h (E, M, K), W (E, K, N), the incoming gradient g (E, M, N)) and
    the launches of both ways of computing it."""

    def __init__(self, runs: int, points: int, width: int, precision: str, device: str) -> None:
        t = layer_tensors(runs, points, width, device)
        gen = torch.Generator(device=device).manual_seed(1)
        self.t = t
        self.h = torch.relu(t["z"])  # the previous layer's output
        self.w = torch.randn(runs, width, width, device=device, generator=gen) / width**0.5
        self.e, self.m, self.k, self.n = runs, points, width, width
        self.dot = fused.DOT_PRECISION[precision]
        self.noise = (t["additive"], t["multiplicative"], t["keys"], t["starts"], 0, 1.0)
        self.out = torch.empty(runs, points, width, device=device)
        self.keep = torch.empty(runs, points, width, device=device, dtype=torch.uint8)
        self.dh = torch.empty_like(self.h)
        self.dw = torch.empty_like(self.w)
        self.db = torch.empty(runs, 1, width, device=device)

    # ----------------------------------------------------------------------------- the default
    def default_forward(self) -> torch.Tensor:
        z = torch.bmm(self.h, self.w)
        out: torch.Tensor = folded._FoldedActivation.apply(z, self.t["bias"], True, *self.noise, True, False)
        return out

    def default_backward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g_z, db, _ = folded._gradient_tiles(
            self.t["g"], z, None, self.t["bias"], self.noise, store=True, sum_bias=True,
            config=folded.TILES, relu=True, noise=True, mult_noise=False,
        )  # fmt: skip
        assert g_z is not None and db is not None
        return torch.bmm(g_z, self.w.transpose(1, 2)), torch.bmm(self.h.transpose(1, 2), g_z), db

    # ------------------------------------------------------------------------------- the fused GEMM
    def launch(self, kernel: str, tile: dict[str, int], warmup: bool = False, bare: bool = False) -> None:
        """One launch of ``kernel`` with ``tile`` (``warmup``: compile only; ``bare``: the product
        alone, without the forward's noise or the backward's ReLU mask, for what they cost)."""
        meta = {"BM": tile["BM"], "BN": tile["BN"], "BK": tile["BK"]}
        options = {} if fused.INTERPRETED else {k: tile[k] for k in ("num_warps", "num_stages")}
        dims = {"M": self.m, "N": self.n, "K": self.k}
        add, mul, keys, starts, offset, sign = self.noise
        if kernel == "_forward_kernel":
            grid = (triton.cdiv(self.m, meta["BM"]) * triton.cdiv(self.n, meta["BN"]), self.e)
            args: tuple[Any, ...] = (
                self.h,
                self.w,
                self.t["bias"],
                self.out,
                self.keep,
                add,
                mul,
                keys,
                starts,
            )
            flags: dict[str, Any] = {"HAS_BIAS": True, "RELU": True, "NOISE": True}
        elif kernel == "_grad_input_kernel":
            grid = (triton.cdiv(self.m, meta["BM"]) * triton.cdiv(self.k, meta["BK"]), self.e)
            args = (self.t["g"], self.keep, self.w, self.dh, mul, keys, starts)
            flags = {"RELU": True, "MULT_NOISE": False}
        else:
            grid = (triton.cdiv(self.k, meta["BK"]) * triton.cdiv(self.n, meta["BN"]), self.e)
            args = (self.h, self.t["g"], self.keep, self.dw, self.db, mul, keys, starts)
            flags = {"HAS_BIAS": True, "RELU": True, "MULT_NOISE": False}
        if bare:
            flags.update({"NOISE": False} if kernel == "_forward_kernel" else {"RELU": False})
        fn = getattr(fused, kernel)
        everything = {**dims, **flags, "PRECISION": self.dot, **meta, **options}
        if warmup:
            fn.warmup(*args, offset, sign, grid=grid, **everything)
        else:
            fn[grid](*args, offset, sign, **everything)

    def result(self, kernel: str) -> tuple[torch.Tensor, ...]:
        """The kernel's float outputs (the forward's mask: :attr:`keep`, compared apart: a product
        summed in another order can put a value within rounding of zero on the other side)."""
        if kernel == "_forward_kernel":
            return (self.out.clone(),)
        if kernel == "_grad_input_kernel":
            return (self.dh.clone(),)
        return (self.dw.clone(), self.db.clone())


def precompile(layer: Layer, device: str) -> dict[str, Any]:
    """Compile every tile of every kernel, with and without its noise or mask, before timing, in
    parallel where Triton allows it (a tile that fails to compile fails again, by name, when timed)."""
    if device != "cuda":
        return {"seconds": 0.0, "parallel": False}
    start = time.perf_counter()
    try:
        pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 4)
        with pool, triton.AsyncCompileMode(pool, ignore_errors=True):
            for kernel in KERNELS:
                for tile in tiles(kernel):
                    layer.launch(kernel, tile, warmup=True)
                    layer.launch(kernel, tile, warmup=True, bare=True)
        return {"seconds": time.perf_counter() - start, "parallel": True}
    except Exception as err:  # the timings still run, compiling each tile on its first call
        print(
            f"parallel compilation failed ({type(err).__name__}: {err}); compiling on first use", flush=True
        )
        return {"seconds": time.perf_counter() - start, "parallel": False, "error": repr(err)}


def timings(layer: Layer, device: str) -> dict[str, Any]:
    """The default's forward and backward for the layer, then every tile of every fused kernel."""

    def ms(work: Callable[[], object]) -> float:
        return median_ms(work, device)

    with torch.no_grad():
        z = torch.bmm(layer.h, layer.w)
        default = {
            "forward_ms": ms(layer.default_forward),
            "backward_ms": ms(lambda: layer.default_backward(z)),
            "bmm_ms": ms(lambda: torch.bmm(layer.h, layer.w)),
        }
        backward = layer.default_backward(z)
        default_results = {
            "_forward_kernel": (layer.default_forward(),),
            "_grad_input_kernel": backward[:1],
            "_grad_weight_kernel": backward[1:],
        }
    print(f"default: { ({k: round(v, 3) for k, v in default.items()}) }", flush=True)
    kernels: dict[str, Any] = {}
    for kernel in KERNELS:
        rows: dict[str, Any] = {}
        reference: tuple[torch.Tensor, ...] | None = None
        first_keep: torch.Tensor | None = None
        for tile in tiles(kernel):
            name = tile_name(tile)
            try:
                took = ms(lambda kernel=kernel, tile=tile: layer.launch(kernel, tile))  # type: ignore[misc]
            except Exception as err:  # a tile that does not compile (shared memory, registers) is named
                rows[name] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                print(f"{kernel} {name}: {rows[name]['error']}", flush=True)
                continue
            result = layer.result(kernel)
            if reference is None:
                reference = result
                first_keep = layer.keep.clone() if kernel == "_forward_kernel" else None
            rows[name] = {"ms": took, "vs_first_tile": relative_difference(result, reference)}
            if first_keep is not None:  # forward: the share of mask bytes another tile set differently
                rows[name]["mask_flips"] = float((layer.keep != first_keep).float().mean())
            print(
                f"{kernel} {name}: {took:.3f} ms (vs first tile {rows[name]['vs_first_tile']:.1e})",
                flush=True,
            )
        timed = {name: row for name, row in rows.items() if "ms" in row}
        best = min(timed, key=lambda name: timed[name]["ms"]) if timed else None
        kernels[kernel] = {"tiles": rows, "best": best}
        if best is not None:
            layer.launch(kernel, tiles_by_name(kernel)[best])
            ours = layer.result(kernel)
            kernels[kernel]["best_vs_default"] = relative_difference(ours, default_results[kernel])
            bare_ms = ms(
                lambda kernel=kernel, best=best: layer.launch(kernel, tiles_by_name(kernel)[best], bare=True)
            )
            kernels[kernel]["best_bare_ms"] = bare_ms  # without the noise (forward) or the mask (backward)
            print(f"{kernel} {best} without its noise or mask: {bare_ms:.3f} ms")
    best_ms = {k: v["tiles"][v["best"]]["ms"] if v["best"] else float("nan") for k, v in kernels.items()}
    fused_layer = {
        "forward_ms": best_ms["_forward_kernel"],
        "backward_ms": best_ms["_grad_input_kernel"] + best_ms["_grad_weight_kernel"],
    }
    return {"default": default, "fused_gemm": kernels, "fused_gemm_best": fused_layer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--runs", type=int, default=1024)
    parser.add_argument("--precision", default="tf32", choices=sorted(fused.DOT_PRECISION))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (Triton's interpreter)")
    args = parser.parse_args()
    device, runs, points, width = ("cpu", 2, 48, 16) if args.smoke else ("cuda", args.runs, 1024, 256)
    if args.smoke:
        args.precision = "fp32"  # the interpreter's dot is IEEE
    torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    start = time.perf_counter()
    layer = Layer(runs, points, width, args.precision, device)
    result: dict[str, Any] = {
        **machine(device),
        "triton": triton.__version__,
        "precision": args.precision,
        "size": {"runs": runs, "points": points, "width": width},
        "compilation": precompile(layer, device),
    }
    print(f"compiled every tile in {result['compilation']['seconds']:.1f} s", flush=True)
    result.update(timings(layer, device))
    both = {"default": result["default"], "fused GEMM (best tiles)": result["fused_gemm_best"]}
    for label, row in both.items():
        print(
            f"{label}: forward {row['forward_ms']:.3f} ms, backward {row['backward_ms']:.3f} ms", flush=True
        )
    write_result(args.json, result, start)


if __name__ == "__main__":
    main()
