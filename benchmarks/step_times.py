"""Time one training step in each mode for the spectral-bias network of DIGEST §4.1.

Network 1 → 256 → 4×256 → 1 (five hidden layers of 256, ReLU), 200 points, full batch, Adam, σ = 0.1.
Prints a table: mode, ms/step, ratio to the clean (baseline) step. Also times R with its parameter
gradient by the explicit chain, by autograd's double backward and by per-example ``jacrev``.

    .venv/bin/python benchmarks/step_times.py [--points 200] [--width 256] [--hidden 5] [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.func import jacrev, vmap

from gni_engine.regulariser import explicit_regulariser
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer


def make_trainer(mode: str, args: argparse.Namespace) -> BatchTrainer:
    spec = parse_run_spec(
        {
            "data": {"n_points": args.points},
            "model": {"hidden": [args.width] * args.hidden},
            "noise": {"sigma": 0.1},
            "training": {"mode": mode, "steps": 10},
            "execution": {"device": args.device},
        }
    )
    trainer = BatchTrainer([spec])
    for _ in range(5):
        trainer.train_step()
    return trainer


def time_modes(args: argparse.Namespace) -> dict[str, float]:
    """Median over rounds, the modes interleaved within each round so that load changes hit all alike."""
    trainers = {mode: make_trainer(mode, args) for mode in ("baseline", "gni", "explicit")}
    samples: dict[str, list[float]] = {mode: [] for mode in trainers}
    for _ in range(args.repeats):
        for mode, trainer in trainers.items():
            _sync()
            start = time.perf_counter()
            for _ in range(5):
                trainer.train_step()
            _sync()
            samples[mode].append((time.perf_counter() - start) / 5)
    out = {f"step_{mode}": statistics.median(values) for mode, values in samples.items()}
    for mode in ("gni", "explicit"):  # ratios within a round, where load is most alike
        ratios = [m / b for m, b in zip(samples[mode], samples["baseline"], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4)
        print(
            f"{mode}/baseline per-round ratio: median {statistics.median(ratios):.3f}, "
            f"IQR {quartiles[0]:.3f}–{quartiles[2]:.3f} over {len(ratios)} rounds"
        )
    return out


def time_regulariser(method: str, args: argparse.Namespace) -> float:
    from gni_engine.networks import MLP

    torch.manual_seed(0)
    net = MLP(1, [args.width] * args.hidden, 1).to(args.device)
    x = torch.rand(args.points, 1, device=args.device)

    def once() -> None:
        if method == "jacrev":
            hs = net.clean_activations(x)
            total = torch.zeros((), device=x.device)
            for k, h in enumerate(hs):
                jac = vmap(jacrev(lambda v, k=k: net.forward_from(k, v.unsqueeze(0)).squeeze(0)))(h)
                total = total + 0.5 * 0.01 * jac.pow(2).sum((1, 2)).mean()
        else:
            total = explicit_regulariser(net, x, loss="mse", sigma=0.1, method=method).sum()  # type: ignore[arg-type]
        torch.autograd.grad(total, list(net.parameters()), allow_unused=True)

    for _ in range(3):
        once()
    times = []
    for _ in range(args.repeats):
        _sync()
        start = time.perf_counter()
        once()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    results: dict[str, float] = time_modes(args)
    for method in ("chain", "autograd", "jacrev"):
        results[f"R_grad_{method}"] = time_regulariser(method, args)
    clean = results["step_baseline"]
    print(
        f"machine: {platform.machine()} {platform.processor()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}"
    )
    print(f"network 1 → {args.width} × {args.hidden} → 1, {args.points} points, full batch, Adam")
    print(f"{'what (median)':<28}{'ms':>9}{'× clean step':>14}")
    for name, seconds in results.items():
        print(f"{name:<28}{seconds * 1e3:>9.2f}{seconds / clean:>14.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "seconds": results}, f, indent=2)


if __name__ == "__main__":
    main()
