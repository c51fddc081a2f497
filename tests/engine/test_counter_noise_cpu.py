"""The compiled CPU kernel of the counter stream, against its torch definition and a float64 twin."""

from __future__ import annotations

import logging
import math
import platform
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gni_engine import counter_noise, counter_noise_cpu
from gni_engine.counter_noise import MASK32, counter_normals, philox4x32
from gni_engine.counter_noise_cpu import (
    NoiseLibrary,
    activate_cpu,
    build_library,
    compare_with_reference,
    counter_normals_cpu,
    inject_cpu,
    openmp_flags,
)
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer

KEYS = torch.tensor([12345, 2**62 + 3], dtype=torch.int64)
STARTS = torch.tensor([0, 2**32 - 5], dtype=torch.int64)  # the second run's counters cross 2**32


def _float64_normals(keys: torch.Tensor, starts: torch.Tensor, n: int) -> torch.Tensor:
    """The stream in float64 from the exact Philox words: log, sqrt, cos and sin in double precision
    (the angle is the float32 product 2π·u that the definition forms)."""
    counters = starts.unsqueeze(1) + torch.arange(-(-n // 4))
    zero = torch.zeros_like(counters)
    words = philox4x32(
        counters & MASK32,
        (counters >> 32) & MASK32,
        zero,
        zero,
        (keys & MASK32)[:, None],
        (keys >> 32)[:, None],
    )
    u = [((w >> 8) + 1).double() * 2.0**-24 for w in words]
    two_pi = torch.tensor(2 * math.pi, dtype=torch.float32)
    angle = [(two_pi * v.float()).double() for v in (u[1], u[3])]
    radius = [torch.sqrt(-2 * torch.log(v)) for v in (u[0], u[2])]
    lanes = [
        radius[0] * angle[0].cos(),
        radius[0] * angle[0].sin(),
        radius[1] * angle[1].cos(),
        radius[1] * angle[1].sin(),
    ]
    return torch.stack(lanes, dim=2).reshape(len(keys), -1)[:, :n]


def test_the_kernel_equals_the_float64_stream_to_float32_rounding() -> None:
    n = 200_003  # not a multiple of 4 nor of a block
    fast = counter_normals_cpu(KEYS, STARTS, n).double()
    exact = _float64_normals(KEYS, STARTS, n)
    scale = exact.abs().clamp(min=1.0)
    # within 4 float32 ulp of max(1, |z|) (1.6 seen)
    assert float(((fast - exact).abs() / scale).max()) < 4 * 2.0**-23
    shifted = counter_normals_cpu(KEYS, STARTS + 1, n).double()  # one counter off: O(1) apart
    assert float((shifted[:, : n - 4] - exact[:, : n - 4]).abs().max()) > 1.0


def test_the_kernel_equals_the_torch_definition() -> None:
    differences = compare_with_reference()
    # normals; injection and its gradient × 2 dtypes × 2 signs × 2 kinds; the fused activation pass:
    # 2 dtypes × 2 activations × 3 noise modes × (output, grad z, grad b with bias; 2 without)
    assert len(differences) == 1 + 16 + 2 * 2 * 3 * (3 + 2)
    fp64 = {k: v for k, v in differences.items() if "float32" not in k}
    assert max(fp64.values()) < 1e-6, fp64  # the float32 normals' rounding, nothing else
    assert max(differences.values()) < 5e-6, differences  # float32: sums over 40 examples
    n = 4_099
    assert torch.equal(  # a run's stream does not depend on the batch
        counter_normals_cpu(KEYS, STARTS, n)[1], counter_normals_cpu(KEYS[1:], STARTS[1:], n)[0]
    )
    assert float((counter_normals_cpu(KEYS, STARTS, n) - counter_normals(KEYS, STARTS, n)).abs().max()) < 1e-6


def test_the_normals_have_the_moments_of_a_gaussian() -> None:
    z = counter_normals_cpu(torch.tensor([7]), torch.tensor([0]), 1_000_000).double()[0]
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15 / n)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_every_instruction_set_and_thread_count_draws_bit_identical_numbers(tmp_path: Path) -> None:
    """Without FMA contraction or fast-math, the baseline, AVX2 and AVX-512 code perform the same IEEE
    operations, Philox's integer words are the same whether intrinsics or GCC's vectoriser compute
    them, and each value depends on its counter alone: a result depends neither on the machine's
    vector width nor on the number of threads. The second run's counters cross 2**32 at 5, inside an
    AVX2 group of eight, and the length leaves a tail of counters that are not a whole group."""
    variants: dict[str, tuple[str, ...]] = {"shared": openmp_flags(), "clones": ()}
    if platform.machine() == "x86_64":
        flags = _cpu_flags()
        levels = (("x86-64", set()), ("x86-64-v3", {"avx2", "fma"}), ("x86-64-v4", {"avx512f"}))
        for march, needs in levels:
            if needs <= flags:  # only what this CPU can run
                variants[march] = ("-DGNI_NO_CLONES", f"-march={march}")
        # Philox by GCC's vectoriser alone (the others take the intrinsics on AVX2 without AVX-512)
        variants["plain"] = ("-DGNI_NO_CLONES", "-march=x86-64", "-DGNI_NO_INTRINSICS")
    with ThreadPoolExecutor() as pool:  # the compiler runs take most of this test's time
        built = pool.map(lambda f: build_library(f, folder=tmp_path), variants.values())
        paths = dict(zip(variants, built, strict=True))
    builds = {name: NoiseLibrary(path) for name, path in paths.items()}
    shared = builds.pop("shared")
    assert shared.shares_torch_threads == bool(openmp_flags())  # PyTorch's libgomp here
    n = 10_007
    first = counter_normals_cpu(KEYS, STARTS, n, builds.pop("clones"))
    for name, lib in builds.items():
        assert torch.equal(counter_normals_cpu(KEYS, STARTS, n, lib), first), name
    for threads in (1, 2, 3):
        assert torch.equal(counter_normals_cpu(KEYS, STARTS, n, shared, threads), first), threads


def test_the_build_is_cached_and_a_failing_compiler_says_why(tmp_path: Path) -> None:
    path = build_library(folder=tmp_path)
    assert path.exists() and build_library(folder=tmp_path) == path
    assert build_library(("-O2",), folder=tmp_path) != path
    with pytest.raises(RuntimeError, match="failed"):
        build_library(("-fno-such-option-exists",), folder=tmp_path)


def test_training_falls_back_to_generators_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("GNI_CACHE_DIR", str(tmp_path / "cache"))
    counter_noise._probe_cpu.cache_clear()
    counter_noise_cpu._library.cache_clear()  # built and loaded by earlier tests
    try:
        with caplog.at_level(logging.WARNING, logger="gni_engine.counter_noise"):
            assert counter_noise.cpu_kernels() is None
        assert "no C compiler" in caplog.text
        spec = parse_run_spec({"model": {"hidden": [4]}, "training": {"mode": "gni", "steps": 2}})
        assert BatchTrainer([spec]).noise_stream == "torch-generator"
        assert BatchTrainer([spec], noise_stream="counter").noise_stream == "philox-counter"
    finally:
        counter_noise._probe_cpu.cache_clear()
        counter_noise_cpu._library.cache_clear()


def test_an_unwritable_cache_folder_falls_back_to_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("GNI_CACHE_DIR", str(blocked / "cache"))  # mkdir fails: a file is in the way
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    counter_noise_cpu._library.cache_clear()
    try:
        library = counter_noise_cpu._library()
        assert list((tmp_path / "tmp").glob("gni-*/philox_noise-*.so"))
        assert torch.equal(
            counter_normals_cpu(KEYS, STARTS, 99, library), counter_normals_cpu(KEYS, STARTS, 99, library, 1)
        )
    finally:
        counter_noise_cpu._library.cache_clear()


def test_a_compiler_without_openmp_builds_the_kernel_for_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A compiler that cannot build with OpenMP (clang without LLVM's runtime, say) still gives the
    kernel: built again without the flag, drawing on one thread, the same numbers."""
    real_cc = shutil.which("cc")
    assert real_cc is not None
    wrapper = tmp_path / "cc-without-openmp"
    wrapper.write_text(
        '#!/bin/sh\nfor a in "$@"; do\n'
        '  case "$a" in -fopenmp*) echo "no OpenMP here" >&2; exit 1;; esac\n'
        f'done\nexec {real_cc} "$@"\n'
    )
    wrapper.chmod(0o755)
    with_openmp = counter_normals_cpu(KEYS, STARTS, 5000)  # the process's own (cached) library
    monkeypatch.setenv("CC", str(wrapper))
    monkeypatch.setenv("GNI_CACHE_DIR", str(tmp_path / "cache"))
    counter_noise_cpu._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="gni_engine.counter_noise_cpu"):
            library = counter_noise_cpu._library()
        assert "did not build with ('-fopenmp',)" in caplog.text and "no OpenMP here" in caplog.text
        assert torch.equal(counter_normals_cpu(KEYS, STARTS, 5000, library), with_openmp)
    finally:
        counter_noise_cpu._library.cache_clear()


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_clang_binds_to_pytorchs_openmp_and_draws_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "clang")
    flags = openmp_flags()
    assert flags in {(), ("-fopenmp=libgomp",)}  # LLVM's default runtime would be a second one
    clang = NoiseLibrary(build_library(flags, folder=tmp_path))
    assert clang.shares_torch_threads
    monkeypatch.setenv("CC", "cc")
    gcc = NoiseLibrary(build_library(openmp_flags(), folder=tmp_path))
    assert torch.equal(
        counter_normals_cpu(KEYS, STARTS, 10_007, clang), counter_normals_cpu(KEYS, STARTS, 10_007, gcc)
    )


def test_the_multiplicative_gradient_is_exact_and_itself_differentiable() -> None:
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    a = torch.tensor([0.1, 0.0], dtype=torch.float64)
    m = torch.tensor([0.3, 0.2], dtype=torch.float64)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return inject_cpu(x, a, m, KEYS, STARTS, 3, -1.0, True)

    assert torch.autograd.gradcheck(noisy, (h,))
    assert torch.autograd.gradgradcheck(noisy, (h,))


def test_the_fused_activation_keeps_a_nan_and_trains_like_separate_steps() -> None:
    """A NaN in z reaches the output (divergence must reach the loss); and ReLU networks train the
    same weights with bias, ReLU and noise fused as with baddbmm, ReLU and the injection (fp64)."""
    z = torch.zeros(2, 3, 4, dtype=torch.float64)
    z[1, 2, 3] = float("nan")
    args = (torch.tensor([0.1, 0.1], dtype=torch.float64), torch.zeros(2, dtype=torch.float64), KEYS, STARTS)
    y = activate_cpu(z, None, "relu", *args, 0, 1.0, True, False)
    assert torch.isnan(y[1, 2, 3]) and int(torch.isnan(y).sum()) == 1
    with pytest.raises(ValueError, match="not 'tanh'"):
        activate_cpu(z, None, "tanh", *args, 0, 1.0, True, False)
    with pytest.raises(ValueError, match=r"bias: expected shape \(2, 1, 4\)"):
        activate_cpu(z, torch.zeros(2, 4, dtype=torch.float64), "relu", *args, 0, 1.0, True, False)
    specs = [
        parse_run_spec(
            {
                "model": {"hidden": [300, 20], "activation": "relu"},  # a row of 300 crosses a block
                "noise": {"sigma": 0.2, "kind": kind},
                "training": {"mode": "gni", "steps": 15, "lr": 0.01},
                "execution": {"precision": "fp64"},
                "seed": seed,
            }
        )
        for seed, kind in enumerate(("additive", "multiplicative"))
    ]
    fused = BatchTrainer(specs)
    separate = BatchTrainer(specs)
    assert fused.fuse_activation and fused.noise_stream == "philox-counter/cpu"
    separate.fuse_activation = False
    for a, b in zip(fused.run(), separate.run(), strict=True):
        for k, w in b.weights.items():
            torch.testing.assert_close(a.weights[k], w, rtol=1e-10, atol=1e-12)


def test_bad_streams_are_named() -> None:
    with pytest.raises(ValueError, match="keys: expected a contiguous int64 CPU tensor"):
        counter_normals_cpu(KEYS.int(), STARTS, 8)
    h = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"one entry per run \(3\)"):
        inject_cpu(h, torch.zeros(3), torch.zeros(3), KEYS, STARTS, 0, 1.0, False)
