"""The Triton Adam kernel under Triton's CPU interpreter (skips where Triton is not installed; a card
runs the same check in ``benchmarks/gpu_checks.py`` and at start-up)."""

from __future__ import annotations

from tests.engine.test_counter_noise_triton import _interpreted, needs_triton

KERNEL = """
from gni_engine.stacked_adam_triton import compare_adam_with_reference

d = compare_adam_with_reference("cpu")
assert d["inactive_moved_float32"] == 0.0 and d["inactive_moved_float64"] == 0.0, d
assert d["adam_float64"] < 1e-14 and d["adam_float32"] < 1e-6, d

import torch
from gni_engine.stacked_adam_triton import adam_step_gpu

p = torch.zeros(2, 4, 3).transpose(1, 2)  # not dense: refused by name, not updated wrongly
state = [torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)]
try:
    active = torch.ones(2, dtype=torch.bool)
    adam_step_gpu([p], [p], state[:1], state[1:], active, torch.ones(2), torch.ones(5))
except ValueError as error:
    assert "dense float32 or float64 parameters" in str(error), error
else:
    raise AssertionError("a transposed parameter was accepted")
print("ok")
"""

TRAINING = """
import torch
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer

def spec(mode, lr, seed, precision):
    return parse_run_spec({
        "data": {"name": "sinusoids", "n_points": 40, "frequencies": [1.0, 3.0]},
        "model": {"hidden": [12, 8], "activation": "relu"},
        "noise": {"sigma": 0.2},
        "training": {"steps": 8, "lr": lr, "mode": mode},
        "analyses": {"record_every": 4, "noise_gap_samples": 2},
        "execution": {"precision": precision},
        "seed": seed,
    })

for precision, tolerance in (("fp64", 1e-12), ("fp32", 1e-5)):
    specs = [spec("gni", 0.01, 0, precision), spec("explicit", 0.003, 1, precision),
             spec("baseline", 0.01, 2, precision)]
    kernel = BatchTrainer(specs, adam_kernel="triton").run()
    fused = BatchTrainer(specs, adam_kernel="torch").run()
    for a, b in zip(kernel, fused):
        assert a.summary["optimiser_kernel"] == "triton-adam", a.summary
        assert b.summary["optimiser_kernel"] == "torch-fused-adam", b.summary
        for k, w in b.weights.items():
            worst = float((a.weights[k] - w).abs().max() / w.abs().max())
            assert worst <= tolerance, (precision, k, worst)
    for s, together in zip(specs, kernel):  # a run alone and in its batch, same kernel
        alone = BatchTrainer([s], adam_kernel="triton").run()[0]
        for k, w in alone.weights.items():
            worst = float((together.weights[k] - w).abs().max() / w.abs().max())
            assert worst <= (1e-10 if precision == "fp64" else 1e-6), (precision, k, worst)
print("ok")
"""


@needs_triton
def test_the_adam_kernel_follows_torch_optim_adam_per_run_and_leaves_failed_runs_alone() -> None:
    """Each run with its own learning rate equals ``torch.optim.Adam`` on that run alone (float64:
    to rounding; float32: within float32's); a run flagged inactive, with NaN gradients, is not
    touched at all."""
    _interpreted(KERNEL)


@needs_triton
def test_training_with_the_adam_kernel_follows_pytorchs_fused_adam_under_the_interpreter() -> None:
    """Three modes and two learning rates in one batch: the same weights as PyTorch's fused Adam
    (grouped by learning rate) to rounding, and each run the same alone and in its batch."""
    _interpreted(TRAINING)
