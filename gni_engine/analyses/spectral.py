r"""Spectra of learned 1-D functions on a uniform grid, and the Fourier reading of R's input term.

On the grid :math:`t_i = i/n`, :math:`i = 0, …, n-1`, of :math:`[0, 1)` the discrete Fourier
coefficients are :math:`c_\omega = \frac1n \sum_i f(t_i)\, e^{-2\pi i \omega t_i}`. A sinusoid
:math:`A \sin(2\pi K t + \varphi)` puts :math:`|c_K| = A/2` in bin K, so the learned amplitude at a
target frequency, normalised as DIGEST §4.1, is :math:`2 |c_K| / |A_K|` (1 means learned in full).

>>> import math
>>> t = torch.arange(64, dtype=torch.float64) / 64
>>> amps = spectrum(3 * torch.sin(2 * math.pi * 5 * t + 1.0))
>>> round(float(amps[5]), 12), round(float(amps[4]), 12)
(1.5, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FFT_CHUNK_ROWS = 16


def rfft_batch_invariant(values: torch.Tensor) -> torch.Tensor:
    """``torch.fft.rfft`` over the last axis, each row's bits its own: (…, n) → (…, n//2 + 1).

    A batched FFT takes vectorised paths whose rounding depends on how many rows there are (a
    power-of-two length alone and in a batch of two differ in the last bits), and a run's numbers
    must not depend on its batch. Rows go through in chunks of a fixed 16, the last padded with
    zeros, so every row takes the same path alone or in any batch (checked on the CPU, float32 and
    float64) at a sixteenth of the calls a loop over rows makes.
    """
    n = values.shape[-1]
    rows = values.reshape(-1, n)
    shape = (*values.shape[:-1], n // 2 + 1)
    if len(rows) == 0:
        complex_dtype = torch.complex128 if values.dtype == torch.float64 else torch.complex64
        return torch.empty(shape, dtype=complex_dtype, device=values.device)
    padded = torch.cat([rows, rows.new_zeros((-len(rows)) % FFT_CHUNK_ROWS, n)])
    chunks = [
        torch.fft.rfft(padded[i : i + FFT_CHUNK_ROWS], dim=-1) for i in range(0, len(padded), FFT_CHUNK_ROWS)
    ]
    return torch.cat(chunks)[: len(rows)].reshape(shape)


def spectrum(values: torch.Tensor) -> torch.Tensor:
    r"""|FFT|/n of values on a uniform grid over the last axis, first n/2 bins: (…, n) → (…, n//2).

    Bin ω holds :math:`|c_\omega|`, the amplitude per unit of frequency ω (cycles per unit length).
    """
    n = values.shape[-1]
    amplitudes: torch.Tensor = rfft_batch_invariant(values).abs()[..., : n // 2] / n
    return amplitudes


def target_amplitudes(
    values: torch.Tensor, frequencies: torch.Tensor, amplitudes: torch.Tensor
) -> torch.Tensor:
    r"""Normalised amplitude :math:`2 |c_K| / |A_K|` at each target frequency.

    values: (E, n) on the grid; frequencies, amplitudes: (E, K) (rounded to the nearest bin).
    Returns (E, K).
    """
    amps = spectrum(values)  # (E, n//2)
    bins = frequencies.round().long().clamp(0, amps.shape[-1] - 1)  # (E, K)
    return 2 * amps.gather(-1, bins) / amplitudes.abs()


def spectral_dynamics(
    snapshots: torch.Tensor, frequencies: torch.Tensor, amplitudes: torch.Tensor
) -> torch.Tensor:
    """Normalised target amplitudes over training: snapshots (T, E, n) → (T, E, K).

    ``frequencies`` and ``amplitudes`` are (E, K); each step's row is :func:`target_amplitudes`.
    """
    t, e, n = snapshots.shape
    k = frequencies.shape[-1]
    flat = target_amplitudes(
        snapshots.reshape(t * e, n),
        frequencies.unsqueeze(0).expand(t, e, k).reshape(t * e, k),
        amplitudes.unsqueeze(0).expand(t, e, k).reshape(t * e, k),
    )
    return flat.reshape(t, e, k)


def derivative_energy_spectrum(values: torch.Tensor) -> torch.Tensor:
    r"""Per-bin share of :math:`\mathrm{mean}_x |f'(x)|^2` by Parseval: (…, n) → (…, n//2 + 1).

    .. math:: \int_0^1 |p'(t)|^2\,dt = \sum_{\omega} (2\pi\omega)^2 |c_\omega|^2

    for the trigonometric interpolant p of f; bins 1 … ⌈n/2⌉−1 count twice (ω and −ω), the
    Nyquist bin of an even n half (its part of p is c cos(πnt), whose derivative squared averages
    (πn)²|c|²/2).
    """
    n = values.shape[-1]
    c = rfft_batch_invariant(values) / n  # (…, n//2 + 1)
    omega = torch.arange(c.shape[-1], dtype=values.dtype, device=values.device)
    weight = torch.full_like(omega, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 0.5
    energy: torch.Tensor = weight * (2 * math.pi * omega) ** 2 * c.abs().pow(2)
    return energy


def remove_ramp(values: torch.Tensor, endpoint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Split f on the grid into a periodic part g and a ramp: :math:`f(t) = g(t) + \Delta t`.

    :math:`\Delta = f(1) - f(0)` with ``endpoint`` = f(1) (…,), so g(1) = g(0) and the wrap-around jump
    that a non-periodic f shows to the FFT is gone. Since the mean of g' over a period is 0,
    :math:`\mathrm{mean}_x |f'|^2 = \mathrm{mean}_x |g'|^2 + \Delta^2`. Returns g (…, n) and Δ (…,).
    """
    n = values.shape[-1]
    delta = endpoint - values[..., 0]  # (…,)
    t = torch.arange(n, dtype=values.dtype, device=values.device) / n
    return values - delta.unsqueeze(-1) * t, delta


def _energy(values: torch.Tensor, endpoint: torch.Tensor | None) -> torch.Tensor:
    """Parseval bins of mean_x |f'|², ramp-corrected when f(1) is given (the ramp's Δ² goes in bin 0)."""
    if endpoint is None:
        return derivative_energy_spectrum(values)
    g, delta = remove_ramp(values, endpoint)
    energy = derivative_energy_spectrum(g)
    return torch.cat([energy[..., :1] + delta.unsqueeze(-1).pow(2), energy[..., 1:]], dim=-1)


def input_term_from_spectrum(
    values: torch.Tensor, sigma0: float | torch.Tensor = 1.0, *, endpoint: torch.Tensor | None = None
) -> torch.Tensor:
    r"""The input-layer term of R for a scalar regression on the uniform grid, via Parseval.

    .. math:: R_0 = \tfrac12 \sigma_0^2\, \mathrm{mean}_x |f'(x)|^2
              = \tfrac12 \sigma_0^2 \sum_\omega (2\pi\omega)^2 |F(\omega)|^2

    values: (…, n). Exact for a periodic band-limited f. A network's f is not periodic: pass
    ``endpoint`` = f(1) to remove the ramp first (:func:`remove_ramp`); what is left of the difference
    to the Jacobian value is the discretisation error (kinks and content above the Nyquist frequency).
    """
    sigma = torch.as_tensor(sigma0, dtype=values.dtype, device=values.device)
    return 0.5 * sigma**2 * _energy(values, endpoint).sum(-1)


def high_frequency_share(
    values: torch.Tensor, cutoff: float | torch.Tensor, *, endpoint: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Share of :math:`\mathrm{mean}_x |f'|^2` above ``cutoff`` Hz (strictly): (…,)."""
    energy = _energy(values, endpoint)  # (…, bins)
    omega = torch.arange(energy.shape[-1], dtype=values.dtype, device=values.device)
    cut = torch.as_tensor(cutoff, dtype=values.dtype, device=values.device)
    above = omega > cut.unsqueeze(-1) if cut.dim() > 0 else omega > cut
    total = energy.sum(-1)
    return (energy * above).sum(-1) / total.clamp_min(torch.finfo(values.dtype).tiny)


def frequency_table(
    frequencies: Sequence[Sequence[float]], amplitudes: Sequence[Sequence[float]], *, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-run target frequencies and amplitudes padded to a common length: (E, K), (E, K), mask (E, K).

    Runs of one batch may target different frequencies; padding uses bin 0 with amplitude 1, masked out.
    """
    k = max(len(f) for f in frequencies)
    freq = torch.zeros(len(frequencies), k, dtype=torch.float64)
    amp = torch.ones(len(frequencies), k, dtype=torch.float64)
    mask = torch.zeros(len(frequencies), k, dtype=torch.bool)
    for e, (fs, amps) in enumerate(zip(frequencies, amplitudes, strict=True)):
        freq[e, : len(fs)] = torch.tensor(fs, dtype=torch.float64)
        amp[e, : len(amps)] = torch.tensor(amps, dtype=torch.float64)
        mask[e, : len(fs)] = True
    return freq.to(device), amp.to(device), mask.to(device)
