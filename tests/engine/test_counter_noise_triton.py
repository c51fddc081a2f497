"""The Triton kernels of counter noise, run by Triton's CPU interpreter where Triton is installed.

The CI machine has no Triton (it comes with CUDA builds of PyTorch), so this skips there; the same
comparison runs on a GPU in ``benchmarks/gpu_checks.py``. The interpreter must be switched on before
Triton is imported, hence the subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
from gni_engine.counter_activation_triton import compare_fused_with_reference
from gni_engine.counter_noise_triton import compare_with_reference

differences = compare_with_reference("cpu")
assert max(differences.values()) < 2e-6, differences
fused = compare_fused_with_reference("cpu")
assert len(fused) == 81 and fused["nan_kept"] == 0.0, fused
assert max(fused.values()) < 2e-6, fused
print("ok")
"""

FUSED_GEMM = """
from gni_engine.fused_linear_triton import compare_linear_with_reference

differences = compare_linear_with_reference("cpu")
# one-input layer: 2 variants x (out, grad_h, grad_w, grad_b); 20 inputs: 8 with a bias, 8 without
assert len(differences) == 2 * 4 + 8 * 4 + 8 * 3 + 1, len(differences)
assert differences["nan_kept"] == 0.0, differences
assert max(differences.values()) < 1e-6, sorted(differences.items(), key=lambda kv: -kv[1])[:5]
print("ok")
"""

SPECS = """
import torch
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer

def spec(mode, kind, seed, precision="fp32"):
    return parse_run_spec({
        "data": {"name": "sinusoids", "n_points": 40, "frequencies": [1.0, 3.0]},
        "model": {"hidden": [12, 8], "activation": "relu"},
        "noise": {"sigma": 0.2, "kind": kind},
        "training": {"steps": 8, "lr": 0.01, "mode": mode},
        "analyses": {"record_every": 4, "noise_gap_samples": 2},
        "execution": {"precision": precision},
        "seed": seed,
    })
"""

TRAINING = (
    SPECS
    + """
specs = [spec("gni", "additive", 0), spec("gni", "multiplicative", 1), spec("baseline", "additive", 2)]
fused = BatchTrainer(specs, noise_stream="counter", fused_gemm="on").run()
separate = BatchTrainer(specs, noise_stream="counter", fused_gemm="off").run()
for a, b in zip(fused, separate):
    assert a.summary["hidden_layer_kernel"] == "fused-gemm", a.summary["hidden_layer_kernel"]
    assert b.summary["hidden_layer_kernel"] == "gemm+fused-activation", b.summary["hidden_layer_kernel"]
    assert a.status == b.status == "succeeded"
    for k, w in b.weights.items():
        torch.testing.assert_close(a.weights[k], w, rtol=1e-5, atol=1e-6)
split = BatchTrainer(specs[:1], noise_stream="counter", fused_gemm="tf32x3")
assert split.hidden_layer_kernel == "fused-gemm/tf32x3", split.hidden_layer_kernel
print("ok")
"""
)

FOLDED = """
from gni_engine.folded_check_triton import (
    compare_folded_with_reference,
    compare_last_with_reference,
)
from gni_engine.folded_activation_triton import tile_shape

assert tile_shape(37, 24) == (4, 16, 4)  # 3 programs down the rows (the last partial), 2 across
differences = compare_folded_with_reference("cpu")
# fp64 and fp32; one-input and 20-input layers: 8 variants with a bias (4 values), 8 without (3)
assert len(differences) == 2 * 2 * (8 * 4 + 8 * 3) + 1, len(differences)
assert differences["nan_kept"] == 0.0, differences
assert max(differences.values()) < 1e-6, sorted(differences.items(), key=lambda kv: -kv[1])[:5]
last = compare_last_with_reference("cpu")
# fp64 and fp32: 16 variants with an output bias (8 with a hidden bias: 6 values, 8 without: 5),
# and one without (5)
assert len(last) == 2 * (8 * 6 + 8 * 5 + 5) + 1, len(last)
assert last["nan_kept"] == 0.0, last
assert max(last.values()) < 1e-6, sorted(last.items(), key=lambda kv: -kv[1])[:5]
print("ok")
"""

FOLDED_TILES = """
from gni_engine import folded_activation_triton as folded
from gni_engine.folded_check_triton import (
    compare_folded_with_reference,
    compare_last_with_reference,
)
from gni_engine.folded_activation_triton import TileConfig

for config in (TileConfig(rolled=False, sum_at_end=False), TileConfig(rolled=True, sum_at_end=False)):
    folded.TILES = config
    for table in (compare_folded_with_reference("cpu", every_variant=False),
                  compare_last_with_reference("cpu", every_variant=False)):
        assert table["nan_kept"] == 0.0, (config, table)
        assert max(table.values()) < 1e-6, (config, sorted(table.items(), key=lambda kv: -kv[1])[:5])
print("ok")
"""

TRAINING_FOLDED = (
    SPECS
    + """
for precision in ("fp32", "fp64"):
    specs = [spec("gni", "additive", 0, precision), spec("gni", "multiplicative", 1, precision),
             spec("baseline", "additive", 2, precision)]
    folded = BatchTrainer(specs, noise_stream="counter", fused_gemm="fold").run()
    separate = BatchTrainer(specs, noise_stream="counter", fused_gemm="off").run()
    for a, b in zip(folded, separate):
        assert a.summary["hidden_layer_kernel"] == "gemm+folded-activation", a.summary
        assert a.status == b.status == "succeeded"
        for k, w in b.weights.items():  # the C kernel's log, cos, sin round unlike numpy's
            torch.testing.assert_close(a.weights[k], w, rtol=1e-5, atol=1e-6)
    for s, together in zip(specs, folded):  # batch vs alone, same kernels
        alone = BatchTrainer([s], noise_stream="counter", fused_gemm="fold").run()[0]
        for k, w in alone.weights.items():
            worst = float((together.weights[k] - w).abs().max() / w.abs().max())
            assert worst <= (1e-10 if precision == "fp64" else 1e-6), (precision, k, worst)
print("ok")
"""
)

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed (CPU-only PyTorch)"
)


def _interpreted(code: str, **variables: str) -> None:
    """Runs ``code`` under the interpreter in a fresh process (``variables``: more of its environment)."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        **variables,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(root), *sys.path]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@needs_triton
def test_the_kernels_match_their_references_under_the_interpreter() -> None:
    _interpreted(CHECK)


TRIG = """
import os
from gni_engine.counter_noise_triton import STREAM_LABEL, trig_errors

errors = trig_errors("cpu")
# numpy's float32 cos/sin for libdevice's; the shared reduction's fma rounds twice under numpy
assert errors["trig_libdevice"] < 1e-7 and errors["trig_shared"] < 2e-7, errors
labels = {"shared": "philox-counter/triton+shared-trig", "libdevice": "philox-counter/triton"}
assert STREAM_LABEL == labels[os.environ["GNI_NOISE_TRIG"]], STREAM_LABEL
print("ok")
"""


@needs_triton
def test_both_trig_variants_give_cosines_and_sines_to_float32_rounding_under_the_interpreter() -> None:
    """Over all 2²⁴ angles a draw can take, the shared reduction's (the default) cos and sin within
    2e-7 of float64's, libdevice's within 1e-7; results say which trig they drew with; and the
    kernels with libdevice's (``GNI_NOISE_TRIG=libdevice``; the default's are checked above) still
    equal the definition (the normals, injection, the fused activation kernel, to the same 2e-6)."""
    _interpreted(TRIG, GNI_NOISE_TRIG="shared")
    _interpreted(TRIG, GNI_NOISE_TRIG="libdevice")
    _interpreted(CHECK, GNI_NOISE_TRIG="libdevice")


@needs_triton
def test_the_fused_gemm_matches_its_definition_under_the_interpreter() -> None:
    """Every variant, partial tiles, a one-input layer, multiplicative noise's regenerated ε."""
    _interpreted(FUSED_GEMM)


@needs_triton
def test_training_with_the_fused_gemm_follows_the_separate_kernels_under_the_interpreter() -> None:
    _interpreted(TRAINING)


@needs_triton
def test_the_folded_kernels_match_their_definition_under_the_interpreter() -> None:
    """fp64 and fp32, every variant of a one-input and a 20-input layer, partial tiles and row chunks,
    the bias (and first-layer weight) gradients summed in the kernel; the last hidden layer with a
    one-output layer folded in (its value recomputed for the output weight's gradient); a NaN
    reaches the output."""
    _interpreted(FOLDED)


@needs_triton
def test_every_way_of_walking_the_rows_gives_the_folded_kernels_definition_under_the_interpreter() -> None:
    """The tile configurations ``benchmarks/fold_tiles.py`` compares on a card (unrolled or rolled row
    chunks, each chunk summed or whole tiles summed at the end) sum in other orders but give the
    same gradients: the first layer's, a hidden layer's and the output layer's."""
    _interpreted(FOLDED_TILES)


@needs_triton
def test_training_with_the_folded_kernels_follows_the_separate_kernels_under_the_interpreter() -> None:
    """A 1-input, 1-output network (its first layer and its output layer folded) trains like the
    separate kernels, and a run gives the same weights alone and in its batch (fp64: ≤ 1e-10)."""
    _interpreted(TRAINING_FOLDED)
