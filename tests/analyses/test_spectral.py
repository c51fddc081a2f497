"""Spectra, spectral dynamics and the Parseval reading of R's input term against closed forms."""

from __future__ import annotations

import math

import torch

from gni_engine.analyses.spectral import (
    derivative_energy_spectrum,
    high_frequency_share,
    input_term_from_spectrum,
    spectral_dynamics,
    spectrum,
    target_amplitudes,
)

N = 200
T = torch.arange(N, dtype=torch.float64) / N


def test_fft_recovers_amplitude_of_known_sinusoid_at_its_bin():
    values = 2.5 * torch.sin(2 * math.pi * 7 * T + 0.3) + 0.5 * torch.cos(2 * math.pi * 30 * T)
    amps = spectrum(values)
    assert amps.shape == (N // 2,)
    assert math.isclose(float(amps[7]), 1.25, rel_tol=1e-12)
    assert math.isclose(float(amps[30]), 0.25, rel_tol=1e-12)
    others = torch.ones(N // 2, dtype=torch.bool)
    others[[7, 30]] = False
    assert float(amps[others].max()) < 1e-12


def test_target_amplitudes_are_normalised_by_two_over_a_k():
    values = torch.stack(
        [3 * torch.sin(2 * math.pi * 5 * T), 0.5 * torch.sin(2 * math.pi * 10 * T + 1)]
    )  # (2, N)
    freqs = torch.tensor([[5.0, 10.0], [5.0, 10.0]], dtype=torch.float64)
    amps = torch.tensor([[3.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    out = target_amplitudes(values, freqs, amps)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=torch.float64), atol=1e-12)


def test_a_negative_amplitude_learned_exactly_reads_one():
    # A_K = −2: the target is −2 sin(2π·10t + φ); learned exactly, its normalised amplitude is 1, not −1.
    values = torch.sin(2 * math.pi * 5 * T) - 2 * torch.sin(2 * math.pi * 10 * T + 0.4)
    out = target_amplitudes(
        values.unsqueeze(0), torch.tensor([[5.0, 10.0]]).double(), torch.tensor([[1.0, -2.0]]).double()
    )
    assert torch.allclose(out, torch.ones(1, 2, dtype=torch.float64), atol=1e-12)


def test_spectral_dynamics_stacks_steps():
    snapshots = torch.stack([s * torch.sin(2 * math.pi * 4 * T) for s in (0.0, 0.5, 1.0)]).unsqueeze(
        1
    )  # (3, 1, N)
    out = spectral_dynamics(
        snapshots, torch.tensor([[4.0]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    )
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), atol=1e-12)


def test_parseval_input_term_equals_derivative_value_for_periodic_function():
    # f = sin(2π·3t) + 0.2 cos(2π·11t): mean |f'|² = ((2π3)² + 0.04 (2π11)²) / 2 exactly on the grid.
    f = torch.sin(2 * math.pi * 3 * T) + 0.2 * torch.cos(2 * math.pi * 11 * T)
    derivative = 2 * math.pi * 3 * torch.cos(2 * math.pi * 3 * T) - 0.2 * 2 * math.pi * 11 * torch.sin(
        2 * math.pi * 11 * T
    )
    sigma0 = 0.3
    jacobian_value = 0.5 * sigma0**2 * derivative.pow(2).mean()
    assert torch.allclose(input_term_from_spectrum(f, sigma0), jacobian_value, rtol=1e-12)


def test_ramp_correction_handles_non_periodic_functions():
    # f(t) = 2t + sin(2π·5t) is not periodic; with f(1) given, mean |f'|² = 4 + (2π5)²/2 exactly.
    f = 2 * T + torch.sin(2 * math.pi * 5 * T)
    exact = 0.5 * (4 + (2 * math.pi * 5) ** 2 / 2)
    corrected = input_term_from_spectrum(f, endpoint=torch.tensor(2.0, dtype=torch.float64))
    assert math.isclose(float(corrected), exact, rel_tol=1e-12)
    assert float(input_term_from_spectrum(f)) > 2 * exact  # the wrap-around jump inflates the raw value


def test_high_frequency_share_splits_energy_at_cutoff():
    f = torch.sin(2 * math.pi * 5 * T) + torch.sin(2 * math.pi * 40 * T)  # energies ∝ 25 and 1600
    share = high_frequency_share(f, 25.0)
    assert math.isclose(float(share), 1600 / 1625, rel_tol=1e-12)
    batched = high_frequency_share(torch.stack([f, f]), torch.tensor([25.0, 45.0], dtype=torch.float64))
    assert torch.allclose(batched, torch.tensor([1600 / 1625, 0.0], dtype=torch.float64), atol=1e-12)


def test_the_nyquist_bin_counts_as_the_interpolants_cosine():
    # On an even grid (−1)^i is cos(πnt), whose derivative squared integrates to (πn)²/2 over [0, 1).
    values = torch.cos(math.pi * N * T)
    energy = derivative_energy_spectrum(values)
    assert math.isclose(float(energy.sum()), (math.pi * N) ** 2 / 2, rel_tol=1e-12)
    assert math.isclose(float(energy[-1]), (math.pi * N) ** 2 / 2, rel_tol=1e-12)
    # Every other bin: the integral of the derivative squared of a sinusoid in it (float64 closed form).
    for k in (1, 17, N // 2 - 1):
        wave = torch.sin(2 * math.pi * k * T + 0.7)
        assert math.isclose(
            float(derivative_energy_spectrum(wave).sum()), (2 * math.pi * k) ** 2 / 2, rel_tol=1e-10
        )


def test_a_runs_spectrum_is_the_same_bits_alone_and_in_a_batch():
    # 64 points: a power of two, where the batched FFT takes vectorised paths that round differently
    values = torch.randn(9, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    together, energies = spectrum(values), derivative_energy_spectrum(values)
    for i in range(len(values)):
        assert torch.equal(together[i], spectrum(values[i : i + 1])[0])
        assert torch.equal(energies[i], derivative_energy_spectrum(values[i]))
    assert spectrum(values[:0]).shape == (0, 32)
