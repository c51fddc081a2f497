"""How a batch computes: its noise stream, the fused GEMM, Adam's kernel, CUDA-graph replay — chosen
and checked.

Each choice comes from :class:`gni_engine.training.BatchTrainer`'s argument or, where that is left
unset, an environment variable (benchmarks and worker fleets set them). An explicit request that a
batch cannot honour is an error naming the reasons, never a silent fallback; only ``auto`` picks.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING

import torch

from gni_engine.counter_noise import (
    REFERENCE_KERNELS,
    CounterKernels,
    FusedLinear,
    cpu_kernels,
    folded_kernel,
    fused_linear_kernel,
    gpu_kernels,
    noise_trig,
)
from gni_engine.optim import AdamKernel
from gni_engine.stacked import StackedMLP

if TYPE_CHECKING:
    from gni_engine.training import BatchTrainer

log = logging.getLogger(__name__)


def read_switch(
    value: str | None, argument: str, variable: str, choices: tuple[str, ...], default: str = "off"
) -> tuple[str, str]:
    """(setting, where it came from): the argument, else the environment variable, else ``default``."""
    if value is not None:
        setting, source = value, argument
    else:
        setting, source = os.environ.get(variable, default), variable
    if setting not in choices:
        raise ValueError(f"{source}: expected one of {', '.join(map(repr, choices))}, got {setting!r}")
    return setting, source


def choose_counter_kernels(trainer: BatchTrainer, noise_stream: str) -> CounterKernels | None:
    """The counter-noise kernels for ``noise_stream`` (``None``: per-run generators); ``auto`` reads
    ``GNI_NOISE_STREAM`` when set."""
    source = "noise_stream"
    if noise_stream == "auto" and "GNI_NOISE_STREAM" in os.environ:
        noise_stream, source = os.environ["GNI_NOISE_STREAM"], "GNI_NOISE_STREAM"
    choices = ("auto", "generator", "counter", "counter-reference")
    if noise_stream not in choices:
        raise ValueError(f"{source}: expected one of {', '.join(map(repr, choices))}, got {noise_stream!r}")
    if noise_stream == "generator":
        return None
    noise_trig()  # a malformed GNI_NOISE_TRIG is an error here, not a failed GPU probe
    fits = trainer.net.point_sizes() is not None and trainer.precision != "bf16"
    if noise_stream != "auto" and not fits:
        raise ValueError(f"noise_stream {noise_stream!r} needs an MLP and a precision other than bf16")
    if not fits:
        return None
    if noise_stream == "counter-reference":
        return REFERENCE_KERNELS
    compiled = gpu_kernels() if trainer.device.type == "cuda" else cpu_kernels()
    if noise_stream == "counter":
        return compiled or REFERENCE_KERNELS
    return compiled


def choose_fused_linear(trainer: BatchTrainer, fused_gemm: str | None) -> tuple[FusedLinear | None, str]:
    """How the hidden layers are computed beyond cuBLAS and the fused activation kernel (``None``:
    just that) and the arithmetic of the products: the run's precision, or ``tf32x3`` for an fp32
    run when asked. ``fold``: cuBLAS products, with a one-input first layer, a one-output last layer
    and the bias gradients folded into the activation kernels. ``auto`` (the default): ``fold`` for
    a batch on CUDA that it computes (measured faster on an H200: 32.2 vs 27.6 runs/s in TF32, 13.8
    vs 12.7 in fp32), else ``off``."""
    setting, source = read_switch(
        fused_gemm, "fused_gemm", "GNI_FUSED_GEMM", ("auto", "off", "on", "tf32x3", "fold"), default="auto"
    )
    products = "tf32x3" if setting == "tf32x3" and trainer.precision == "fp32" else trainer.precision
    if setting == "auto":  # fold where an explicit request would be honoured, quietly off elsewhere
        if trainer.device.type != "cuda":
            return None, products
        try:
            return choose_fused_linear(trainer, "fold")
        except ValueError:
            return None, products
    if setting == "off":
        return None, products
    net = trainer.net
    what = "the folded activation kernels compute" if setting == "fold" else "the fused GEMM computes"
    if not trainer.fuse_activation or not isinstance(net, StackedMLP):
        model = trainer.first.model
        raise ValueError(
            f"{source}: {what} the hidden layers of MLPs with relu or linear "
            f"activations trained with counter noise; this batch is a {model.kind} "
            f"({getattr(model, 'activation', '?')}) with {trainer.noise_stream} noise"
        )
    widths = [int(w.shape[2]) for w in net.weights[:-1]]
    if setting == "fold":
        return _folded(trainer, source, widths), products
    if trainer.dtype != torch.float32 or any(d % 4 for d in widths):
        raise ValueError(
            f"{source}: the fused GEMM computes float32 runs (precision fp32 or tf32) whose hidden "
            f"widths are multiples of 4; this batch is {trainer.precision} with hidden widths {widths}"
        )
    kernel = fused_linear_kernel(trainer.device)
    if kernel is None:
        raise ValueError(
            f"{source}: the fused-GEMM kernel cannot run on {trainer.device} (it needs Triton, and CUDA "
            "or TRITON_INTERPRET=1; see the warning above)"
        )
    return kernel, products


def _folded(trainer: BatchTrainer, source: str, widths: list[int]) -> FusedLinear:
    if trainer.dtype not in (torch.float32, torch.float64) or any(d % 4 for d in widths):
        raise ValueError(
            f"{source}: the folded activation kernels compute float32 or float64 runs (fp32, tf32, "
            f"fp64) whose hidden widths are multiples of 4; this batch is {trainer.precision} with "
            f"hidden widths {widths}"
        )
    kernel = folded_kernel(trainer.device)
    if kernel is None:
        raise ValueError(
            f"{source}: the folded activation kernels cannot run on {trainer.device} (they need "
            "Triton, and CUDA or TRITON_INTERPRET=1; see the warning above)"
        )
    return kernel


def choose_adam_kernel(trainer: BatchTrainer, adam_kernel: str | None) -> AdamKernel | None:
    """Adam's update for the batch (``None``: PyTorch's fused Adam, grouped by learning rate).
    ``triton``: :mod:`gni_engine.stacked_adam_triton`'s kernel (a learning rate per run, failed runs
    skipped on the device); ``torch``: PyTorch's; ``auto`` (the default): the kernel for Adam on
    CUDA where its start-up check passed, else PyTorch's. ``None`` reads ``GNI_ADAM_KERNEL``."""
    setting, source = read_switch(
        adam_kernel, "adam_kernel", "GNI_ADAM_KERNEL", ("auto", "torch", "triton"), default="auto"
    )
    if setting == "torch" or (setting == "auto" and trainer.device.type != "cuda"):
        return None
    reasons = []
    optimiser = trainer.first.training.optimizer
    if optimiser != "adam":
        reasons.append(f"the runs' optimiser is {optimiser}")
    kernel = None if reasons else _probe_adam(trainer.device.type)
    if kernel is None and not reasons:
        reasons.append(
            f"it cannot run on {trainer.device} (it needs Triton, and CUDA or TRITON_INTERPRET=1; see "
            "the warning above)"
        )
    if reasons and setting == "triton":
        raise ValueError(f"{source}: the Triton Adam kernel updates Adam runs: {'; '.join(reasons)}")
    return kernel


@functools.cache
def _probe_adam(device_type: str) -> AdamKernel | None:
    """The kernel, checked against ``torch.optim.Adam`` once per process (``None``, with a warning,
    where it cannot run or disagrees)."""
    try:
        from gni_engine import stacked_adam_triton as adam

        if device_type != ("cpu" if adam.INTERPRETED else "cuda"):
            raise RuntimeError(
                f"Triton compiles for CUDA devices (or interprets on the CPU), not {device_type}"
            )
        differences = adam.compare_adam_with_reference(device_type)
        if max(differences.values()) > 1e-5:
            raise RuntimeError(f"kernel and reference disagree: {differences}")
    except Exception as error:  # ImportError, a compiler or driver error, a wrong result
        log.warning(
            "Triton Adam kernel unusable on %s (%s); Adam runs as PyTorch's fused kernel", device_type, error
        )
        return None
    return adam.adam_step_gpu


def wants_step_graph(trainer: BatchTrainer, cuda_graph: str | None) -> bool:
    """Whether to replay the step from a CUDA graph (:mod:`gni_engine.step_graph`); an ``on`` the
    batch cannot honour is refused with every reason."""
    setting, source = read_switch(cuda_graph, "cuda_graph", "GNI_CUDA_GRAPH", ("off", "on"))
    if setting == "off":
        return False
    reasons = []
    if trainer.device.type != "cuda":
        reasons.append(f"the device is {trainer.device}, not CUDA")
    if trainer.batch_size < trainer.x_train.shape[1]:
        reasons.append("minibatches are drawn on the host (full-batch training only)")
    if trainer.needs_noise and trainer.counter_kernels is None:
        reasons.append("the noise comes from per-run torch.Generators, not counter streams")
    estimator = trainer.first.training.regulariser
    if trainer.needs_r and not trainer.hand_gradient and estimator != "exact":
        reasons.append(f"the {estimator} estimator of R draws from generators")
    if reasons:
        raise ValueError(f"{source}: this batch cannot be replayed from a CUDA graph: {'; '.join(reasons)}")
    return True
