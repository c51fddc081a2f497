"""Runs/s of a sweep trained one run at a time vs stacked into batches (the batching issue's benchmark).

Reference sweep (GPU): network 1 → 256 → 256 → 256 → 256 → 1 (ReLU, biases), 1024 points of a sinusoid
mixture, 2000 full-batch Adam steps, additive σ on the input and every hidden layer, N runs differing in
seed and σ. ``--cpu-scale`` runs the CPU anchor's size instead: 32 runs of 1 → 128 × 3 → 1, 256 points,
1000 steps. Both ways run in this one process; the sequential way times ``--seq-runs`` runs and
reports runs/s, so it does not have to train all N.

    .venv/bin/python benchmarks/batching.py --cpu-scale [--rounds 30]
    .venv/bin/python benchmarks/batching.py --runs 256 --precision tf32 --json out.json   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import torch

from gni_engine.spec import RunSpec, parse_run_spec
from gni_engine.training import BatchTrainer


def sweep(args: argparse.Namespace, mode: str) -> list[RunSpec]:
    specs = []
    for i in range(args.runs):
        sigma = 0.05 + 0.1 * (i % 4) / 3  # σ ∈ {0.05, …, 0.15}, seeds all different
        specs.append(
            parse_run_spec(
                {
                    "data": {
                        "n_points": args.points,
                        "frequencies": [1.0, 5.0, 10.0, 20.0],
                        "phases": "zero",
                    },
                    "model": {"hidden": [args.width] * args.hidden},
                    "noise": {"sigma": sigma, "layers": "all"},
                    "training": {"mode": mode, "steps": args.steps, "lr": 1e-3},
                    # the benchmark measures training: analyses once at the end, no Monte-Carlo gap
                    "analyses": {
                        "record_every": args.steps,
                        "noise_gap_samples": 0,
                        "layer_norms": False,
                        "spectrum": False,
                    },
                    "execution": {"device": args.device, "precision": args.precision},
                    "seed": i,
                }
            )
        )
    return specs


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def training_noise(trainer: BatchTrainer) -> str:
    """The stream a trainer draws its training noise from ("none" when the mode draws none), how its
    hidden layers are computed, and its optimiser's kernel."""
    graph = ", CUDA graph" if trainer.step_graph is not None else ""
    optimiser = f", {trainer.optimiser.kernel_label}"
    if not trainer.needs_noise:
        return "none" + optimiser + graph
    return f"{trainer.noise_stream}, hidden layers {trainer.hidden_layer_kernel}{optimiser}{graph}"


def time_training(specs: list[RunSpec], streams: set[str]) -> float:
    trainer = BatchTrainer(specs)
    streams.add(training_noise(trainer))
    _sync()
    start = time.perf_counter()
    trainer.run()
    _sync()
    return time.perf_counter() - start


def flops_per_run(args: argparse.Namespace) -> float:
    dims = [1] + [args.width] * args.hidden + [1]
    macs = sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True)) * args.points
    return 6.0 * macs * args.steps


def measure(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    specs = sweep(args, mode)
    streams: set[str] = set()  # which noise streams this mode's timed trainers used
    warm = sweep(argparse.Namespace(**{**vars(args), "runs": 1, "steps": min(args.steps, 20)}), mode)
    time_training(warm, set())  # warm-up (allocator, kernel compilation and start-up checks)
    seq = sum(time_training([s], streams) for s in specs[: args.seq_runs])
    stacked = time_training(specs, streams)
    seq_rate = args.seq_runs / seq
    stacked_rate = args.runs / stacked
    flops = flops_per_run(args)
    return {
        "mode": mode,
        "sequential_runs_per_s": seq_rate,
        "stacked_runs_per_s": stacked_rate,
        "speedup": stacked_rate / seq_rate,
        "stacked_tflops": flops * stacked_rate / 1e12,
        "noise_streams": sorted(streams),
        "sequential_seconds": seq,
        "stacked_seconds": stacked,
    }


def measure_interleaved(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Per-step throughput, stacked and one run at a time alternating in rounds (``--round-steps``
    stacked steps, then that many times E / 2 steps of one run alone: about as long), so that this
    VM's drift (its speed changes by 1.5× between minutes) hits both alike; the median of the
    per-round ratios is the figure to read. Steps only: set-up and final analyses, which the
    whole-run figures include, are left out."""
    specs = sweep(args, mode)
    stacked = BatchTrainer(specs)
    alone = [BatchTrainer([s]) for s in specs[: args.seq_runs]]

    alone_steps = max(1, args.round_steps * len(specs) // 2)

    def steps_per_s(trainer: BatchTrainer, steps: int) -> float:
        _sync()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        _sync()
        return steps / (time.perf_counter() - start)

    steps_per_s(stacked, args.round_steps)
    for trainer in alone:
        steps_per_s(trainer, args.round_steps)  # warm-up
    ratios, seq_rates, stacked_rates = [], [], []
    for r in range(args.rounds):
        seq = steps_per_s(alone[r % len(alone)], alone_steps) / args.steps  # runs/s
        batch = steps_per_s(stacked, args.round_steps) * len(specs) / args.steps
        seq_rates.append(seq)
        stacked_rates.append(batch)
        ratios.append(batch / seq)
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "mode": mode,
        "rounds": args.rounds,
        "round_steps": args.round_steps,
        "median_ratio": statistics.median(ratios),
        "ratio_iqr": [quartiles[0], quartiles[2]],
        "sequential_runs_per_s": statistics.median(seq_rates),
        "stacked_runs_per_s": statistics.median(stacked_rates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--seq-runs", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=4)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp64"])
    parser.add_argument("--modes", default="gni", help="comma-separated: baseline,gni,explicit")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--cpu-scale", action="store_true", help="32 runs of 1→128×3→1, 256 points, 1000 steps"
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="also time steps in this many alternating rounds (drift-proof)"
    )
    parser.add_argument("--round-steps", type=int, default=10, help="stacked steps in a round")
    parser.add_argument(
        "--fused-gemm",
        default="auto",
        choices=["auto", "off", "on", "tf32x3", "fold"],
        help="hidden layers as one Triton GEMM each, or cuBLAS with the folded activation kernels "
        "(fold; auto, the default, folds where they run), or cuBLAS with the fused activation "
        "kernel (off) (BatchTrainer's fused_gemm; GPU)",
    )
    parser.add_argument(
        "--adam-kernel",
        default="auto",
        choices=["auto", "torch", "triton"],
        help="Adam as one Triton kernel with a learning rate per run (triton; auto, the default, on "
        "CUDA) or PyTorch's fused Adam (torch) (BatchTrainer's adam_kernel)",
    )
    parser.add_argument(
        "--cuda-graph",
        default="off",
        choices=["off", "on"],
        help="replay each trainer's step from a CUDA graph (BatchTrainer's cuda_graph; GPU)",
    )
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    os.environ["GNI_FUSED_GEMM"] = args.fused_gemm  # every trainer of this process
    os.environ["GNI_CUDA_GRAPH"] = args.cuda_graph
    os.environ["GNI_ADAM_KERNEL"] = args.adam_kernel
    if args.cpu_scale:
        args.runs, args.seq_runs, args.width, args.hidden, args.points, args.steps = 32, 8, 128, 3, 256, 1000
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"precision {args.precision}"
    )
    print(
        f"sweep: {args.runs} runs of 1 → {args.width} × {args.hidden} → 1, "
        f"{args.points} points, {args.steps} steps"
    )
    results = []
    for mode in args.modes.split(","):  # printed and written as each mode finishes
        r = measure(args, mode)
        results.append(r)
        print(
            f"{r['mode']:>9}: sequential {r['sequential_runs_per_s']:.3f} runs/s, stacked "
            f"{r['stacked_runs_per_s']:.3f} runs/s ({r['speedup']:.2f}×, {r['stacked_tflops']:.3f} TFLOP/s; "
            f"noise: {', '.join(r['noise_streams'])})",
            flush=True,
        )
        if args.rounds:
            i = measure_interleaved(args, mode)
            results.append({**i, "mode": f"{mode} (interleaved steps)"})
            print(
                f"{mode:>9}, steps in {i['rounds']} alternating rounds: sequential "
                f"{i['sequential_runs_per_s']:.3f} runs/s, stacked {i['stacked_runs_per_s']:.3f} runs/s, "
                f"median per-round ratio {i['median_ratio']:.2f}× "
                f"(IQR {i['ratio_iqr'][0]:.2f}–{i['ratio_iqr'][1]:.2f})",
                flush=True,
            )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {"device": name, "torch": torch.__version__, "args": vars(args), "results": results},
                    f,
                    indent=2,
                )


if __name__ == "__main__":
    main()
