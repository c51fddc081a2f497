"""The CPU kernel of :mod:`gni_engine.counter_noise`: the counter stream, compiled and vectorised.

A forward pass of the spectral-bias network (200 points, five hidden layers of 256) draws 256,200
normals: with ``torch.Generator`` (a serial Mersenne Twister) that was about a third of a training
step. ``csrc/philox_noise.c`` computes the same counter stream as the torch definition
(Philox4x32-10, then Box–Muller on 24-bit uniforms), a block of counters per vector loop, and adds
it to the activations in the same pass: h + s ε (a + m h) without materialising ε — for a hidden
layer together with its bias and ReLU, after a bias-free ``bmm`` (the CPU twin of
:mod:`gni_engine.counter_activation_triton`). Blocks of
counters run on PyTorch's OpenMP threads where its runtime is GNU's (each value depends on its
counter alone, so the thread count changes no bit).

The C file is compiled on first use with the machine's C compiler (``$CC``, else ``cc``) into a
cache folder (``$GNI_CACHE_DIR``, else ``$XDG_CACHE_HOME/gni``, else ``~/.cache/gni``; the system's
temporary folder where that is not writable), named by the hash of the source, compiler, flags and
architecture, and written atomically so that concurrent workers can share it; on x86-64 it holds
AVX-512, AVX2 and baseline clones and picks one at load time. The values are bit-identical
whichever clone runs, and agree with :func:`gni_engine.counter_noise.counter_normals` to float32
rounding of log, cos and sin (the integer words are exact). Where no compiler exists,
:func:`gni_engine.counter_noise.cpu_kernels` returns ``None`` and training keeps the per-run generators.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CFLAGS = ("-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno", "-ffp-contract=off")
_VOID_P = ctypes.c_void_p  # pointers pass as ints (data_ptr())
_I64 = ctypes.c_int64


def c_source() -> str:
    return resources.files("gni_engine").joinpath("csrc/philox_noise.c").read_text(encoding="utf-8")


def cache_dir() -> Path:
    if "GNI_CACHE_DIR" in os.environ:
        return Path(os.environ["GNI_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gni"


def compiler() -> str:
    return os.environ.get("CC", "cc")


def _openmp_runtimes() -> set[str]:
    """Paths of the OpenMP runtimes this process has loaded (Linux; empty elsewhere)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    except OSError:
        return set()
    names = ("libgomp", "libiomp", "libomp")
    return {
        line.split()[-1] for line in maps.splitlines() if any(n in line.rsplit("/", 1)[-1] for n in names)
    }


@functools.cache
def _is_clang(cc: str) -> bool:
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return "clang" in done.stdout.lower()


def openmp_flags() -> tuple[str, ...]:
    """``-fopenmp`` where PyTorch's OpenMP runtime is GNU's (``libgomp.so.1``, already loaded): the
    library then binds to that same runtime and its blocks run on PyTorch's threads, which are awake
    right after the preceding matrix product (``-fopenmp=libgomp`` for clang, whose own default is
    LLVM's runtime). Elsewhere (another runtime, no /proc) none: one thread."""
    if any(Path(path).name == "libgomp.so.1" for path in _openmp_runtimes()):
        return ("-fopenmp=libgomp",) if _is_clang(compiler()) else ("-fopenmp",)
    return ()


def build_library(extra_flags: tuple[str, ...] = (), folder: Path | None = None) -> Path:
    """Compile the C kernel (once per source, flags and compiler) and return the shared library's path.

    Raises ``RuntimeError`` naming the compiler and its message when compilation fails.
    """
    source = c_source()
    flags = CFLAGS + extra_flags
    cc = compiler()
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH (set CC)")
    identity = (source, cc, *flags, sys.platform, platform.machine())  # a shared cache may span machines
    digest = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    folder = folder or cache_dir()
    target = folder / f"philox_noise-{digest}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    log.info("compiling the CPU noise kernel into %s (once per machine and source)", target)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        c_file = Path(scratch) / "philox_noise.c"
        c_file.write_text(source, encoding="utf-8")
        built = Path(scratch) / target.name
        done = subprocess.run(
            [cc, *flags, "-o", str(built), str(c_file), "-lm"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed ({done.returncode}): {done.stderr.strip()[:2000]}")
        os.replace(built, target)  # atomic: a concurrent build of the same file writes the same bytes
    return target


class NoiseLibrary:
    """The loaded kernel and the threads it may use: PyTorch's count where it shares PyTorch's OpenMP
    runtime, else one (a library that brought a second runtime along is never asked to start it)."""

    def __init__(self, path: Path) -> None:
        before = _openmp_runtimes()
        self.lib = ctypes.CDLL(str(path))
        self.lib.gni_normals_f32.argtypes = [_VOID_P, _VOID_P, _I64, _I64, _VOID_P, ctypes.c_int]
        self.lib.gni_normals_f32.restype = None
        ints = [ctypes.c_int] * 4
        signatures = {  # pointers; offset, sign; runs, values per run (, features); flags, threads
            "gni_inject": [_VOID_P] * 6 + [_I64, ctypes.c_double, _I64, _I64] + ints[:2],
            "gni_activate": [_VOID_P] * 8 + [_I64, ctypes.c_double, _I64, _I64, _I64] + ints,
            "gni_activate_grad": [_VOID_P] * 6 + [_I64, ctypes.c_double, _I64, _I64] + ints[:2],
        }
        for stem, argtypes in signatures.items():
            for suffix in ("f32", "f64"):
                function = getattr(self.lib, f"{stem}_{suffix}")
                function.argtypes = argtypes
                function.restype = None
        self.shares_torch_threads = bool(before) and _openmp_runtimes() == before
        if not self.shares_torch_threads and _openmp_runtimes() - before:
            log.warning("the CPU noise kernel loaded its own OpenMP runtime; it will draw on one thread")

    def threads(self) -> int:
        return torch.get_num_threads() if self.shares_torch_threads else 1


@functools.cache
def _library() -> NoiseLibrary:
    flags = openmp_flags()
    try:
        return NoiseLibrary(_build_with_or_without(flags))
    except OSError as error:  # a read-only or missing home: the system's temporary folder instead
        fallback = Path(tempfile.gettempdir()) / f"gni-{os.getuid()}"
        log.info("cache folder unusable (%s); building the CPU noise kernel in %s", error, fallback)
        return NoiseLibrary(_build_with_or_without(flags, fallback))


def _build_with_or_without(openmp: tuple[str, ...], folder: Path | None = None) -> Path:
    """Build with the OpenMP flags; where the compiler cannot (no OpenMP support or runtime to link),
    without them: the kernel then draws on one thread."""
    try:
        return build_library(openmp, folder=folder)
    except RuntimeError as error:
        if not openmp or "no C compiler" in str(error):
            raise
        log.warning(
            "the CPU noise kernel did not build with %s (%s); building it for one thread", openmp, error
        )
        return build_library(folder=folder)


def _check_rows(keys: torch.Tensor, starts: torch.Tensor, runs: int) -> None:
    for name, t in (("keys", keys), ("starts", starts)):
        if t.dtype != torch.int64 or t.device.type != "cpu" or t.shape != (runs,) or not t.is_contiguous():
            raise ValueError(
                f"{name}: expected a contiguous int64 CPU tensor of shape ({runs},), got {t.shape}"
            )


def counter_normals_cpu(
    keys: torch.Tensor,
    starts: torch.Tensor,
    n: int,
    lib: NoiseLibrary | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """(E, n) float32 normals: :func:`gni_engine.counter_noise.counter_normals`, compiled."""
    lib = lib or _library()
    _check_rows(keys, starts, len(keys))
    out = torch.empty(len(keys), n, dtype=torch.float32)
    threads = lib.threads() if threads is None else threads
    lib.lib.gni_normals_f32(keys.data_ptr(), starts.data_ptr(), len(keys), n, out.data_ptr(), threads)
    return out


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _run_scales(
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    h: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a and m in h's dtype, contiguous, after checking that scales and streams have one entry per run."""
    a = additive.to(h.dtype).contiguous()
    m = multiplicative.to(h.dtype).contiguous()
    runs = (h.shape[0],)
    if a.shape != runs or m.shape != runs or keys.shape != runs or starts.shape != runs:
        raise ValueError(f"scales and streams need one entry per run ({runs[0]})")
    return a, m


class _Inject(torch.autograd.Function):
    """h + s ε (a + m h). The input gradient g (1 + s m ε) regenerates ε and is written with torch
    operations, so that it is itself differentiable (double backward)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: torch.Tensor,
        a: torch.Tensor,
        m: torch.Tensor,
        keys: torch.Tensor,
        starts: torch.Tensor,
        offset: int,
        sign: float,
        additive_only: bool,
    ) -> torch.Tensor:
        h_c = h.contiguous()
        out = torch.empty_like(h_c)
        library = _library()
        getattr(library.lib, f"gni_inject_{_SUFFIX[h.dtype]}")(
            h_c.data_ptr(),
            out.data_ptr(),
            a.data_ptr(),
            m.data_ptr(),
            keys.data_ptr(),
            starts.data_ptr(),
            offset,
            sign,
            h.shape[0],
            h[0].numel(),
            additive_only,
            library.threads(),
        )
        if not additive_only:
            ctx.save_for_backward(m, keys, starts)
            ctx.offset, ctx.sign = offset, sign
        ctx.additive_only = additive_only
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.additive_only:
            return g, None, None, None, None, None, None, None
        m, keys, starts = ctx.saved_tensors
        eps = counter_normals_cpu(keys, starts + ctx.offset, g[0].numel()).to(g.dtype).reshape(g.shape)
        view = (-1,) + (1,) * (g.dim() - 1)
        return g + g * ((m * ctx.sign).reshape(view) * eps), None, None, None, None, None, None, None


def inject_cpu(
    h: torch.Tensor,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    multiplicative_anywhere: bool,
) -> torch.Tensor:
    """h + s ε (a + m h) in one compiled pass, for float32 and float64 h on the CPU (other dtypes
    take the torch definition). a, m: (E,); keys, starts: (E,) int64 (``CounterStreams``)."""
    if h.dtype not in _SUFFIX or h.device.type != "cpu":
        from gni_engine.counter_noise import inject_reference

        return inject_reference(h, additive, multiplicative, keys, starts + point_offset, sign)
    a, m = _run_scales(additive, multiplicative, keys, starts, h)
    out: torch.Tensor = _Inject.apply(  # type: ignore[no-untyped-call]
        h, a, m, keys, starts, point_offset, sign, not multiplicative_anywhere
    )
    return out


class _Activate(torch.autograd.Function):
    """φ(z + b) + s ε (a + m φ(z + b)) for a hidden layer (φ = ReLU or identity, b (E, 1, d) or
    ``None``). Backward: g φ'(z + b) (1 + s m ε), ε regenerated only for multiplicative noise, and the
    bias gradient summed over examples. For ReLU the forward keeps only the byte mask z + b > 0 for
    the backward, so z itself is freed as soon as the layer is done. Once differentiable, like the
    Triton kernel: R is never differentiated through a noisy pass."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: torch.Tensor,
        bias: torch.Tensor | None,
        relu: bool,
        a: torch.Tensor,
        m: torch.Tensor,
        keys: torch.Tensor,
        starts: torch.Tensor,
        offset: int,
        sign: float,
        noise: bool,
        additive_only: bool,
    ) -> torch.Tensor:
        z_c = z.contiguous()
        b_c = bias.contiguous() if bias is not None else None
        out = torch.empty_like(z_c)
        mask = torch.empty(z_c.shape, dtype=torch.uint8) if relu else None
        library = _library()
        getattr(library.lib, f"gni_activate_{_SUFFIX[z.dtype]}")(
            z_c.data_ptr(),
            b_c.data_ptr() if b_c is not None else None,
            out.data_ptr(),
            mask.data_ptr() if mask is not None else None,
            a.data_ptr(),
            m.data_ptr(),
            keys.data_ptr(),
            starts.data_ptr(),
            offset,
            sign,
            z.shape[0],
            z[0].numel(),
            z.shape[-1],
            relu,
            noise,
            additive_only,
            library.threads(),
        )
        ctx.save_for_backward(mask, m, keys, starts)
        ctx.settings = (offset, sign, noise and not additive_only, bias is not None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        mask, m, keys, starts = ctx.saved_tensors
        offset, sign, regenerate, has_bias = ctx.settings
        if mask is None and not regenerate:
            grad_z = g
        else:
            g_c = g.contiguous()
            grad_z = torch.empty_like(g_c)
            library = _library()
            getattr(library.lib, f"gni_activate_grad_{_SUFFIX[g.dtype]}")(
                g_c.data_ptr(),
                mask.data_ptr() if mask is not None else None,
                grad_z.data_ptr(),
                m.data_ptr(),
                keys.data_ptr(),
                starts.data_ptr(),
                offset,
                sign,
                g.shape[0],
                g[0].numel(),
                regenerate,
                library.threads(),
            )
        grad_bias = grad_z.sum(1, keepdim=True) if has_bias and ctx.needs_input_grad[1] else None
        return grad_z, grad_bias, None, None, None, None, None, None, None, None, None


def activate_cpu(
    z: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    additive: torch.Tensor,
    multiplicative: torch.Tensor,
    keys: torch.Tensor,
    starts: torch.Tensor,
    point_offset: int,
    sign: float,
    noise: bool,
    multiplicative_anywhere: bool,
) -> torch.Tensor:
    """φ(z + b) with its noise in one compiled pass (:func:`gni_engine.counter_noise.reference_activator`
    is the definition); z (E, N, d), b (E, 1, d) or ``None``, φ = relu or linear."""
    from gni_engine.counter_noise import FUSED_ACTIVATIONS, reference_activator

    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"the fused kernel takes {' or '.join(FUSED_ACTIVATIONS)}, not {activation!r}")
    if z.dtype not in _SUFFIX or z.device.type != "cpu":
        return reference_activator(
            z, bias, activation, additive, multiplicative, keys, starts, point_offset, sign, noise, False
        )
    if bias is not None and bias.shape != (z.shape[0], 1, z.shape[-1]):
        raise ValueError(f"bias: expected shape ({z.shape[0]}, 1, {z.shape[-1]}), got {tuple(bias.shape)}")
    a, m = _run_scales(additive, multiplicative, keys, starts, z)
    out: torch.Tensor = _Activate.apply(  # type: ignore[no-untyped-call]
        z,
        bias,
        activation == "relu",
        a,
        m,
        keys,
        starts,
        point_offset,
        sign,
        noise,
        not multiplicative_anywhere,
    )
    return out


def compare_with_reference() -> dict[str, float]:
    """Largest absolute differences between the compiled kernel and the torch definition: the
    normals against its float64 twin (counters crossing 2**32, a length not a multiple of four or
    of a block), the injection with its gradient (both signs, both dtypes) and the fused activation
    pass. Rounding of log, cos and sin gives < 1e-6; a wrong integer word gives O(1)."""
    from gni_engine.counter_noise import counter_normals, inject_reference

    keys = torch.tensor([3, 2**62 + 1, 12345], dtype=torch.int64)
    starts = torch.tensor([0, 2**32 - 7, 2**40 + 3], dtype=torch.int64)
    n = 5_001
    # against the float64 twin: in a freshly forked Celery child, torch's float32 reference was seen
    # to be off by 4e-5 at one value on its first call (about 1 start in 5; the kernel's values were
    # right, and the same reference right on its second call)
    twin = counter_normals(keys, starts, n, dtype=torch.float64)
    out = {"normals": float((counter_normals_cpu(keys, starts, n).double() - twin).abs().max())}
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        h = torch.randn(3, 50, 7, dtype=dtype, generator=generator)
        g = torch.randn(3, 50, 7, dtype=dtype, generator=generator)
        a = torch.tensor([0.1, 0.0, 0.2], dtype=dtype)
        m = torch.tensor([0.0, 0.3, 0.2], dtype=dtype)
        for sign in (1.0, -1.0):
            for mult in (True, False):
                m_used = m if mult else torch.zeros_like(m)
                h_ref = h.clone().requires_grad_(True)
                ref = inject_reference(h_ref, a, m_used, keys, starts + 11, sign)
                (ref_grad,) = torch.autograd.grad(ref, h_ref, g)
                h_fast = h.clone().requires_grad_(True)
                fast = inject_cpu(h_fast, a, m_used, keys, starts, 11, sign, mult)
                (fast_grad,) = torch.autograd.grad(fast, h_fast, g)
                tag = f"{str(dtype)[6:]}/{sign:+.0f}/{'mult' if mult else 'add'}"
                out[f"inject {tag}"] = float((fast - ref).detach().abs().max())
                out[f"grad {tag}"] = float((fast_grad - ref_grad).abs().max())
    out.update(_compare_activation(keys, starts))
    return out


def _compare_activation(keys: torch.Tensor, starts: torch.Tensor) -> dict[str, float]:
    """The fused bias–activation–noise pass against its definition: output and the gradients of z
    and b, for ReLU and identity, with and without bias, without noise, additive and mixed noise."""
    from gni_engine.counter_noise import reference_activator

    out: dict[str, float] = {}
    generator = torch.Generator().manual_seed(1)
    for dtype in (torch.float64, torch.float32):
        z = torch.randn(3, 40, 300, dtype=dtype, generator=generator)  # a row crosses a block
        b = torch.randn(3, 1, 300, dtype=dtype, generator=generator)
        g = torch.randn(3, 40, 300, dtype=dtype, generator=generator)
        a = torch.tensor([0.1, 0.0, 0.2], dtype=dtype)
        for activation in ("relu", "linear"):
            for bias in (b, None):
                for noise, m in (("none", None), ("add", [0.0, 0.0, 0.0]), ("mult", [0.0, 0.3, 0.2])):
                    m_t = torch.tensor(m or [0.0] * 3, dtype=dtype)
                    results = []
                    for fn in (reference_activator, activate_cpu):
                        z_in = z.clone().requires_grad_(True)
                        b_in = bias.clone().requires_grad_(True) if bias is not None else None
                        y = fn(
                            z_in,
                            b_in,
                            activation,
                            a,
                            m_t,
                            keys,
                            starts,
                            5,
                            -1.0,
                            m is not None,
                            noise == "mult",
                        )
                        wrt = [z_in] + ([b_in] if b_in is not None else [])
                        results.append((y.detach(), *torch.autograd.grad(y, wrt, g)))
                    tag = f"{str(dtype)[6:]}/{activation}/{'bias' if bias is not None else 'no bias'}/{noise}"
                    for name, ref, fast in zip(("out", "grad z", "grad b"), *results, strict=False):
                        out[f"activate {tag} {name}"] = float((fast - ref).abs().max())
    return out
