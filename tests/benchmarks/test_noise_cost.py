"""The noise-cost benchmark end to end at tiny sizes under Triton's CPU interpreter: it times every
kernel it names, with and without the noise, in the trig variant its environment asks for."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.interpreted import needs_triton, run_smoke


@needs_triton
def test_the_noise_cost_benchmark_times_each_kernel_with_and_without_noise(tmp_path: Path) -> None:
    result = run_smoke("noise_cost.py", tmp_path / "noise_cost_shared.json", GNI_NOISE_TRIG="shared")
    assert result["noise_stream"] == "philox-counter/triton+shared-trig"
    assert set(result["trig_errors"]) == {"trig_libdevice", "trig_shared"}
    assert max(result["trig_errors"].values()) < 2e-7
    for kernel in ("first_forward", "hidden_forward", "last_forward"):
        assert result["ms"][f"{kernel}_ms"] > 0 and result["ms"][f"{kernel}_without_noise_ms"] > 0
    assert result["ms"]["normals_ms"] > 0 and result["ms"]["last_backward_ms"] > 0
    # the thread layout the card compares: each kernel with the warps it does not use by default
    for kernel, warps in (("first_forward", 8), ("hidden_forward", 4)):
        assert result["ms"][f"{kernel}_{warps}_warps_ms"] > 0
        assert result["ms"][f"{kernel}_{warps}_warps_identical"] == 1.0
