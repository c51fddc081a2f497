"""GPU checks that CPU tests cannot make: the Triton kernels equal their definitions on the card, a
stacked batch equals its runs trained alone on the device (cuBLAS with the fused activation kernel,
and with the folded kernels), a diverging run fails on its own (naming its step) while the others
finish, replayed CUDA-graph steps equal eager ones, and where a stacked step's time goes
(torch.profiler, the reference sweep's network) with each way of computing the hidden layers, and
the Triton Adam kernel against ``torch.optim.Adam`` and timed against PyTorch's fused Adam.
``--fused-gemm`` adds the fused GEMM (in the run's precision, and an fp32 run's products as three
TF32 products): its checks and profiles, whose autotuning compiles for minutes.

    python benchmarks/gpu_checks.py --json out.json [--profile-runs 256] [--drift] [--fused-gemm]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from timing import median_ms  # this folder's

from gni_engine.losses import run_losses
from gni_engine.spec import RunSpec, parse_run_spec
from gni_engine.training import BatchTrainer, matmul_precision

DEVICE = "cuda"
SMOKE = False  # --smoke: tiny sizes, to try the script on the CPU (under TRITON_INTERPRET=1)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def spec(
    mode: str,
    kind: str,
    seed: int,
    *,
    precision: str,
    lr: float = 1e-3,
    steps: int = 200,
    width: int = 64,
    points: int = 128,
    optimizer: str = "adam",
) -> RunSpec:
    if SMOKE:
        steps, width, points = min(steps, 6), 8, 24
    return parse_run_spec(
        {
            "data": {"n_points": points, "frequencies": [1.0, 5.0, 10.0], "phases": "zero"},
            "model": {"hidden": [width] * 3},
            "noise": {"sigma": 0.1, "kind": kind, "layers": "all"},
            "training": {"mode": mode, "steps": steps, "lr": lr, "optimizer": optimizer},
            "analyses": {
                "record_every": steps,
                "noise_gap_samples": 0,
                "layer_norms": False,
                "spectrum": False,
            },
            "execution": {"device": DEVICE, "precision": precision},
            "seed": seed,
        }
    )


def equivalence(precision: str, fused_gemm: str = "off") -> dict[str, Any]:
    """Largest relative difference between each run trained in a batch of five and trained alone."""
    specs = [
        spec("baseline", "additive", 0, precision=precision),
        spec("gni", "additive", 1, precision=precision),
        spec("gni", "multiplicative", 2, precision=precision),
        spec("explicit", "additive", 3, precision=precision),
        spec("explicit", "multiplicative", 4, precision=precision),
    ]
    stacked = BatchTrainer(specs, fused_gemm=fused_gemm).run()
    worst: dict[str, float] = {}
    for s, together in zip(specs, stacked, strict=True):
        alone = BatchTrainer([s], fused_gemm=fused_gemm).run()[0]
        diff = max(
            float((together.weights[k] - alone.weights[k]).abs().max() / alone.weights[k].abs().max())
            for k in alone.weights
        )
        worst[f"{s.training.mode}/{s.noise.kind}"] = diff
    return worst


def counter_kernel() -> dict[str, Any]:
    """The Triton kernels against their pure-torch definitions: normals, injection and its backward,
    and the fused bias–activation–noise kernel (forward, gradients of z and b)."""
    from gni_engine.counter_activation_triton import compare_fused_with_reference
    from gni_engine.counter_noise_triton import compare_with_reference

    # the variants training compiles (every variant was checked on the H100 and runs in the tests
    # under the interpreter): each variant costs the card a compilation
    return {**compare_with_reference(DEVICE), **compare_fused_with_reference(DEVICE, every_variant=False)}


def folded_kernel() -> dict[str, Any]:
    """The folded activation kernels (``fused_gemm="fold"``) against their definition, fp64 and fp32:
    one-input and 20-input layers and the last hidden layer with a one-output layer folded in, in
    the variants a ReLU network trains with (every variant runs under the interpreter in the tests;
    each costs the card a compilation)."""
    from gni_engine.folded_check_triton import compare_fold_with_reference

    start = time.perf_counter()
    return _summary(compare_fold_with_reference(DEVICE, every_variant=False), start)


def adam_kernel(runs: int) -> dict[str, Any]:
    """The Triton Adam kernel against ``torch.optim.Adam`` (float64 reference, a learning rate per
    run, a failed run untouched), then one update of the reference sweep's parameters for ``runs``
    runs (1 → 256 × 4 → 1; ~198 k a run) timed three ways: PyTorch's fused Adam alone (every run
    active, one learning rate), the same after zeroing failed runs' gradients in place (what a GPU
    step does between the host's looks at the divergence flags), and the Triton kernel (which reads
    the flags itself). Median of 20 updates after 3, CUDA events; bytes are the 7 passes over the
    parameters an update needs at least (read p, g, m, v; write p, m, v)."""
    from gni_engine.optim import StackedOptimiser
    from gni_engine.stacked_adam_triton import adam_step_gpu, compare_adam_with_reference
    from gni_engine.training import _zero_runs

    start = time.perf_counter()
    out: dict[str, Any] = {"check": compare_adam_with_reference(DEVICE)}
    out["check_seconds_with_compilation"] = time.perf_counter() - start
    width = 8 if SMOKE else 256
    runs = min(runs, 4) if SMOKE else runs
    shapes = [(1, width), (width,)] + [(width, width), (width,)] * 3 + [(width, 1), (1,)]
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    params = [torch.randn((runs, *s), device=DEVICE, generator=generator) for s in shapes]
    grads = [torch.randn((runs, *s), device=DEVICE, generator=generator) for s in shapes]
    active = torch.ones(runs, dtype=torch.bool, device=DEVICE)
    lr = torch.full((runs,), 1e-3, dtype=torch.float64, device=DEVICE)
    values = sum(p.numel() for p in params)
    timings: dict[str, float] = {}
    for name in ("torch_fused", "torch_fused_and_zeroing", "triton"):
        optimiser = StackedOptimiser(
            params, kind="adam", lr=lr, adam_kernel=adam_step_gpu if name == "triton" else None
        )

        def update(optimiser: StackedOptimiser = optimiser, name: str = name) -> None:
            step_grads: list[torch.Tensor] = grads
            if name == "torch_fused_and_zeroing":
                step_grads = [_zero_runs(g, ~active) for g in grads]
            optimiser.step(step_grads, active, all_active=True)

        timings[name] = median_ms(update, DEVICE, repeats=20, warmups=3)
    out.update(
        {
            "runs": runs,
            "parameters": values,
            "ms": timings,
            "gb_per_s": {k: 7 * values * 4 / (ms * 1e-3) / 1e9 for k, ms in timings.items()},
        }
    )
    return out


def _summary(differences: dict[str, float], start: float) -> dict[str, Any]:
    """How many values a comparison checked, the worst and where, and the seconds it took."""
    worst = max(differences, key=lambda k: differences[k])
    return {
        "checks": len(differences),
        "worst": worst,
        "worst_relative_difference": differences[worst],
        "nan_kept": differences["nan_kept"],
        "seconds_with_compilation": time.perf_counter() - start,
    }


def fused_gemm_kernel() -> dict[str, Any]:
    """The fused GEMM against its definition (float64 ``bmm`` + activation + counter noise), relative
    to the largest reference value, for each arithmetic of its products: IEEE fp32 (expect ~1e-6),
    TF32 (~1e-3: 10-bit mantissas) and three TF32 products (expect near fp32's). The variants a ReLU
    network trains with (every variant runs under the interpreter in the tests: each costs the card
    a compilation per tile candidate)."""
    from gni_engine.fused_linear_triton import compare_linear_with_reference

    out: dict[str, Any] = {}
    for products in ("fp32", "tf32", "tf32x3"):
        start = time.perf_counter()
        differences = compare_linear_with_reference(DEVICE, precision=products, every_variant=False)
        out[products] = _summary(differences, start)
    return out


def drift_diagnosis() -> dict[str, Any]:
    """Is the fp32 baseline run's drift from fp64 when trained alone a precision fault or the run's
    own sensitivity? (a) One gradient at the shared initial weights, fp32 against fp64, for the run
    alone and in a pair: a precision fault (TF32-like) shows as ~1e-3 relative error, plain fp32 as
    ~1e-6. (b) The largest relative weight difference along the 200 steps, fp32 alone against fp64:
    a fault drifts from the first steps, a sensitive run tracks fp64 and then jumps."""
    base = spec("baseline", "additive", 0, precision="fp32")
    twin = spec("baseline", "additive", 0, precision="fp64")

    def gradients(trainer: BatchTrainer) -> list[torch.Tensor]:
        with matmul_precision(trainer.precision):
            out = trainer.net.forward(trainer.x_train).output
            loss = run_losses(trainer.loss, out, trainer.y_train).sum()
            return [g[0].double() for g in torch.autograd.grad(loss, trainer.net.parameters())]

    def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(
            float((x - y).abs().max() / y.abs().max().clamp_min(1e-300)) for x, y in zip(a, b, strict=True)
        )

    reference = gradients(BatchTrainer([twin]))
    out: dict[str, Any] = {
        "gradient_alone": worst(gradients(BatchTrainer([base])), reference),
        "gradient_pair": worst(
            gradients(BatchTrainer([base, spec("baseline", "additive", 1, precision="fp32")])), reference
        ),
    }
    single, double = BatchTrainer([base]), BatchTrainer([twin])
    trajectory = []
    for step in range(1, 201):
        single.train_step()
        double.train_step()
        if step in (1, 2, 5, 10, 20, 50, 100, 150, 200):
            w32 = [p[0].detach().double() for p in single.net.parameters()]
            w64 = [p[0].detach() for p in double.net.parameters()]
            trajectory.append((step, worst(w32, w64)))
    out["weights_apart_by_step"] = trajectory
    return out


def divergence() -> dict[str, Any]:
    """One run with a huge SGD step in a batch of three: it alone fails, at the step it diverged."""
    specs = [
        spec("gni", "additive", i, precision="fp32", lr=lr, steps=300, optimizer="sgd")
        for i, lr in enumerate([1e-3, 10.0, 1e-3])
    ]
    states = BatchTrainer(specs).run()
    alone = BatchTrainer([specs[1]]).run()[0]
    return {
        "statuses": [s.status for s in states],
        "failed_step": states[1].failed_step,
        "failed_step_alone": alone.failed_step,
        "error": states[1].error,
        "others_finite": all(
            bool(torch.isfinite(v).all()) for s in (states[0], states[2]) for v in s.weights.values()
        ),
    }


def graph_equivalence(kernels: tuple[str, ...]) -> dict[str, Any]:
    """Largest absolute weight difference between 20 eager steps and 20 steps replayed from a CUDA
    graph (captured after the warm-up), same runs, same kernels: expect 0. Per hidden-layer kernel."""
    specs = [
        spec("gni", "additive", 0, precision="fp32"),
        spec("gni", "multiplicative", 1, precision="fp32"),
        spec("explicit", "additive", 2, precision="fp32"),
    ]
    out: dict[str, Any] = {}
    for fused_gemm in kernels:
        eager = BatchTrainer(specs, fused_gemm=fused_gemm)
        graphed = BatchTrainer(specs, fused_gemm=fused_gemm, cuda_graph="on")
        for _ in range(20):
            eager.train_step()
            graphed.train_step()
        _sync()
        assert graphed.step_graph is not None
        out[f"fused_gemm_{fused_gemm}"] = {
            "max_abs_difference": max(
                float((a - b).abs().max())
                for a, b in zip(eager.net.parameters(), graphed.net.parameters(), strict=True)
            ),
            "replayed_steps": graphed.step_graph.replays,
            "capture_failed": graphed.step_graph.failed,
        }
    return out


def profile(
    runs: int, mode: str, precision: str, *, fused_gemm: str = "off", cuda_graph: str = "off"
) -> dict[str, Any]:
    """Time and profile steps of the reference sweep's network; ``fused_gemm`` and ``cuda_graph`` as
    ``BatchTrainer``'s (``"off"``: cuBLAS and the fused activation kernel; eager steps). The first
    step includes the fused GEMM's autotuning (timed separately); the graph is captured in the
    warm-up."""
    points, width = (48, 8) if SMOKE else (1024, 256)
    specs = [
        parse_run_spec(
            {
                "data": {"n_points": points, "frequencies": [1.0, 5.0, 10.0, 20.0], "phases": "zero"},
                "model": {"hidden": [width] * 4},
                "noise": {"sigma": 0.1, "layers": "all"},
                "training": {"mode": mode, "steps": 100, "lr": 1e-3},
                "analyses": {
                    "record_every": 100,
                    "noise_gap_samples": 0,
                    "layer_norms": False,
                    "spectrum": False,
                },
                "execution": {"device": DEVICE, "precision": precision},
                "seed": i,
            }
        )
        for i in range(runs)
    ]
    trainer = BatchTrainer(specs, fused_gemm=fused_gemm, cuda_graph=cuda_graph)
    start = time.perf_counter()
    trainer.train_step()
    _sync()
    first_step = time.perf_counter() - start
    for _ in range(4):
        trainer.train_step()
    _sync()
    steps = 20
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    host = (time.perf_counter() - start) / steps  # time to enqueue a step (the GPU may lag behind)
    _sync()
    wall = (time.perf_counter() - start) / steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if DEVICE == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(10):
            trainer.train_step()
        _sync()
    table = prof.key_averages().table(
        sort_by="cuda_time_total" if DEVICE == "cuda" else "cpu_time_total",
        row_limit=25,
        max_name_column_width=60,
    )
    print(
        f"profile {mode} {precision} {runs} runs ({trainer.noise_stream}, hidden layers: "
        f"{trainer.hidden_layer_kernel}, {trainer.optimiser.kernel_label}, CUDA graph {cuda_graph}): "
        f"wall {wall * 1e3:.2f} ms/step, "
        f"host enqueue {host * 1e3:.2f} ms/step, first step {first_step:.1f} s"
    )
    print(table)
    return {
        "runs": runs,
        "mode": mode,
        "precision": precision,
        "noise_stream": trainer.noise_stream,
        "hidden_layer_kernel": trainer.hidden_layer_kernel,
        "optimiser_kernel": trainer.optimiser.kernel_label,
        "cuda_graph": cuda_graph,
        "graph_replayed_steps": trainer.step_graph.replays if trainer.step_graph is not None else 0,
        "graph_capture_failed": trainer.step_graph.failed if trainer.step_graph is not None else None,
        "wall_ms_per_step": wall * 1e3,
        "first_step_s": first_step,
        "host_ms_per_step": host * 1e3,
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True)
    parser.add_argument("--profile-runs", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: try the script on the CPU (TRITON_INTERPRET=1)"
    )
    parser.add_argument(
        "--drift", action="store_true", help="also diagnose the fp32 E = 1 drift (answered on the H100)"
    )
    parser.add_argument(
        "--fused-gemm",
        action="store_true",
        help="also check and profile the fused GEMM (its autotuning compiles for minutes; it ran at "
        "half cuBLAS's speed on an H200)",
    )
    parser.add_argument(
        "--only-drift", action="store_true", help="the kernel checks and the drift diagnosis only"
    )
    parser.add_argument(
        "--only-kernel-checks",
        action="store_true",
        help="the kernel checks only (counter noise, folded kernels, Adam: accuracy and Adam's timing)",
    )
    args = parser.parse_args()
    global DEVICE, SMOKE
    DEVICE, SMOKE = args.device, args.smoke
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    out: dict[str, Any] = {"device": name, "torch": torch.__version__}

    def save(key: str, value: Any) -> None:  # written after every check: a timeout keeps what was done
        out[key] = value
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)

    if DEVICE == "cuda" or SMOKE:
        save("counter_kernel", counter_kernel())
        worst = max(out["counter_kernel"], key=out["counter_kernel"].get)
        print(
            f"counter kernels vs reference ({len(out['counter_kernel'])} checks): worst {worst} "
            f"{out['counter_kernel'][worst]:.3g}",
            flush=True,
        )
        save("folded_kernel", folded_kernel())
        print(f"folded activation kernels vs reference: {out['folded_kernel']}", flush=True)
        save("adam_kernel", adam_kernel(4 * args.profile_runs))
        print(f"Adam kernel: {out['adam_kernel']}", flush=True)
        if args.fused_gemm:
            save("fused_gemm_kernel", fused_gemm_kernel())
            print(f"fused GEMM vs reference: {out['fused_gemm_kernel']}", flush=True)
    if args.only_kernel_checks:
        return
    if args.drift or args.only_drift:
        save("drift_diagnosis", drift_diagnosis())
        print(f"drift diagnosis: {out['drift_diagnosis']}", flush=True)
    if args.only_drift:
        return
    kernels = ("off", "fold", "on") if args.fused_gemm else ("off", "fold")
    if DEVICE == "cuda":
        save("graph_equivalence", graph_equivalence(kernels))
        print(f"CUDA graph vs eager: {out['graph_equivalence']}", flush=True)
    for precision, fused_gemm in [  # correctness before the profiles
        ("fp64", "fold"),
        ("fp32", "fold"),
        ("fp64", "off"),
        ("fp32", "off"),
        *([("fp32", "on"), ("tf32", "on")] if args.fused_gemm else []),
    ]:
        key = f"equivalence_{precision}" + {"off": "", "fold": "_fold", "on": "_fused_gemm"}[fused_gemm]
        save(key, equivalence(precision, fused_gemm))
        print(f"equivalence {precision}, hidden layers {fused_gemm}: {out[key]}", flush=True)
    save("divergence", divergence())
    print(f"divergence: {out['divergence']}", flush=True)
    runs = args.profile_runs
    graph = "on" if DEVICE == "cuda" else "off"
    settings_list = [  # most telling first: a cut-short call keeps them (fold: the default)
        (4 * runs, "gni", "tf32", "fold", "off"),
        (runs, "gni", "fp32", "fold", "off"),
        (4 * runs, "gni", "tf32", "off", "off"),
        (runs, "gni", "fp32", "off", "off"),
        (4 * runs, "gni", "tf32", "fold", graph),
        (runs, "gni", "fp32", "fold", graph),
    ]
    if args.fused_gemm:
        settings_list += [
            (4 * runs, "gni", "tf32", "on", graph),
            (runs, "gni", "fp32", "tf32x3", graph),
            (4 * runs, "gni", "tf32", "on", "off"),
            (runs, "gni", "fp32", "tf32x3", "off"),
            (runs, "gni", "fp32", "on", "off"),
        ]
    profiles: list[dict[str, Any]] = []
    for n, mode, precision, fused_gemm, cuda_graph in settings_list:
        profiles.append(profile(n, mode, precision, fused_gemm=fused_gemm, cuda_graph=cuda_graph))
        save("profiles", profiles)


if __name__ == "__main__":
    main()
