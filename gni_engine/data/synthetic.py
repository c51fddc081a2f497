"""Synthetic data sets: the mixture of sinusoids (DIGEST §4.1), two moons and two circles.

Every value is computed in float64 from seeded generators and cast to the requested dtype last, so
runs at different precisions see the same data up to rounding.

>>> from gni_engine.spec import SinusoidsData
>>> spec = SinusoidsData(n_points=8, frequencies=(1.0,), phases="zero")
>>> data = sinusoids(spec, seed=0, dtype=torch.float64)
>>> [round(v, 6) for v in data.y_train[:3, 0].tolist()]  # sin(2π t) at t = 0, 1/8, 2/8
[0.0, 0.707107, 1.0]
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gni_engine.data.dataset import Dataset
from gni_engine.data.splits import data_generator, split_indices, subset_indices
from gni_engine.spec import CirclesData, SinusoidsData, TwoMoonsData


def sinusoid_phases(spec: SinusoidsData, seed: int) -> torch.Tensor:
    """φ_K: drawn ``U[0, 2π)`` from the ``sinusoids.phases`` stream, zeros, or the given values."""
    k = len(spec.frequencies)
    if spec.phases == "random":
        return (
            2
            * math.pi
            * torch.rand(k, generator=data_generator(seed, "sinusoids.phases"), dtype=torch.float64)
        )
    if spec.phases == "zero":
        return torch.zeros(k, dtype=torch.float64)
    return torch.tensor(spec.phases, dtype=torch.float64)


def sinusoid_directions(spec: SinusoidsData, seed: int) -> torch.Tensor:
    """Unit directions u_K (K, dim), uniform on the sphere (normalised Gaussians); ``[[1]]*K`` in 1-D."""
    k = len(spec.frequencies)
    if spec.dim == 1:
        return torch.ones(k, 1, dtype=torch.float64)
    g = torch.randn(k, spec.dim, generator=data_generator(seed, "sinusoids.directions"), dtype=torch.float64)
    directions: torch.Tensor = g / g.norm(dim=1, keepdim=True)  # (K, dim)
    return directions


def sinusoid_mixture(
    t: torch.Tensor,
    frequencies: torch.Tensor,
    amplitudes: torch.Tensor,
    phases: torch.Tensor,
    directions: torch.Tensor,
) -> torch.Tensor:
    r"""The target at points ``t`` (N, d):

    .. math:: y(t) = \sum_K A_K \sin(2\pi K \langle u_K, t\rangle + \varphi_K)

    Returns (N, 1).
    """
    projections = t @ directions.T  # (N, K)
    waves = torch.sin(2 * math.pi * frequencies * projections + phases)  # (N, K)
    return (waves * amplitudes).sum(dim=1, keepdim=True)  # (N, 1)


def sinusoids(spec: SinusoidsData, seed: int, dtype: torch.dtype) -> Dataset:
    """The mixture of sinusoids.

    ``dim == 1``: the grid :math:`t_i = i / n`, :math:`i = 0, …, n-1`; a held-out test share is a
    random subset of grid points and train keeps the remaining points *in grid order* (the spectral
    analysis relies on it). ``dim > 1``: ``n`` points uniform on :math:`[0, 1)^d` from the
    ``sinusoids.points`` stream, each component along its own random unit direction u_K.
    """
    k = len(spec.frequencies)
    frequencies = torch.tensor(spec.frequencies, dtype=torch.float64)  # (K,)
    amplitudes = torch.tensor(spec.amplitudes or (1.0,) * k, dtype=torch.float64)  # (K,)
    phases = sinusoid_phases(spec, seed)  # (K,)
    directions = sinusoid_directions(spec, seed)  # (K, d)
    n = spec.n_points
    if spec.dim == 1:
        t = (torch.arange(n, dtype=torch.float64) / n).unsqueeze(1)  # (n, 1)
    else:
        t = torch.rand(n, spec.dim, generator=data_generator(seed, "sinusoids.points"), dtype=torch.float64)
    y = sinusoid_mixture(t, frequencies, amplitudes, phases, directions)  # (n, 1)
    train, test = split_indices(n, spec.test_fraction, data_generator(seed, "split"), keep_order=True)
    meta: dict[str, Any] = {
        "frequencies": list(spec.frequencies),
        "amplitudes": amplitudes.tolist(),
        "phases": phases.tolist(),
        "n_points": n,
        "dim": spec.dim,
    }
    if spec.dim == 1:
        meta |= {"grid": "uniform", "grid_spacing": 1.0 / n}
    else:
        meta |= {"grid": "random_uniform", "directions": directions.tolist()}
    return Dataset(
        x_train=t[train].to(dtype),
        y_train=y[train].to(dtype),
        x_test=t[test].to(dtype),
        y_test=y[test].to(dtype),
        input_shape=(spec.dim,),
        n_outputs=1,
        meta=meta,
    )


def _two_arcs(
    outer: torch.Tensor, inner: torch.Tensor, noise: float, seed: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the outer (label 0) and inner (label 1) arcs and add N(0, noise²) jitter."""
    x = torch.cat([outer, inner])  # (n, 2)
    y = torch.cat([torch.zeros(len(outer), dtype=torch.int64), torch.ones(len(inner), dtype=torch.int64)])
    if noise > 0:
        jitter = torch.randn(x.shape, generator=data_generator(seed, f"{name}.noise"), dtype=torch.float64)
        x = x + noise * jitter
    return x, y


def moons_points(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""scikit-learn's ``make_moons`` geometry (unshuffled), jittered from the ``two_moons.noise`` stream.

    With :math:`a = \lfloor n/2 \rfloor` outer and :math:`b = n - a` inner points, angles
    :math:`\theta` evenly spaced on :math:`[0, \pi]` (end points included): outer
    :math:`(\cos\theta, \sin\theta)`, label 0; inner :math:`(1 - \cos\theta, \tfrac12 - \sin\theta)`, label 1.
    """
    n_outer = n // 2
    a = torch.linspace(0, math.pi, n_outer, dtype=torch.float64)
    b = torch.linspace(0, math.pi, n - n_outer, dtype=torch.float64)
    outer = torch.stack([torch.cos(a), torch.sin(a)], dim=1)  # (n_outer, 2)
    inner = torch.stack([1 - torch.cos(b), 0.5 - torch.sin(b)], dim=1)  # (n_inner, 2)
    return _two_arcs(outer, inner, noise, seed, "two_moons")


def circles_points(n: int, noise: float, factor: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""scikit-learn's ``make_circles`` geometry (unshuffled), jittered from the ``circles.noise`` stream.

    Angles :math:`\theta_j = 2\pi j / m` (end point excluded): outer unit circle of
    :math:`\lfloor n/2 \rfloor` points, label 0; inner circle of radius ``factor``, label 1.
    """
    n_outer = n // 2

    def circle(m: int, radius: float) -> torch.Tensor:
        theta = 2 * math.pi * torch.arange(m, dtype=torch.float64) / m
        return radius * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)  # (m, 2)

    return _two_arcs(circle(n_outer, 1.0), circle(n - n_outer, factor), noise, seed, "circles")


def two_moons(spec: TwoMoonsData, seed: int, dtype: torch.dtype) -> Dataset:
    """Two interleaved half-moons in raw coordinates, split and subset from seeded streams."""
    x, y = moons_points(spec.n_points, spec.noise, seed)
    return _classification_split(x, y, spec.test_fraction, spec.subset, seed, dtype, {"noise": spec.noise})


def circles(spec: CirclesData, seed: int, dtype: torch.dtype) -> Dataset:
    """Two concentric circles in raw coordinates, split and subset from seeded streams."""
    x, y = circles_points(spec.n_points, spec.noise, spec.factor, seed)
    meta = {"noise": spec.noise, "factor": spec.factor}
    return _classification_split(x, y, spec.test_fraction, spec.subset, seed, dtype, meta)


def _classification_split(
    x: torch.Tensor,
    y: torch.Tensor,
    test_fraction: float,
    subset: int | None,
    seed: int,
    dtype: torch.dtype,
    meta: dict[str, Any],
) -> Dataset:
    train, test = split_indices(len(x), test_fraction, data_generator(seed, "split"))
    train = train[subset_indices(len(train), subset, data_generator(seed, "subset.train"))]
    return Dataset(
        x_train=x[train].to(dtype),
        y_train=y[train],
        x_test=x[test].to(dtype),
        y_test=y[test],
        input_shape=(2,),
        n_outputs=2,
        meta={"n_points": len(x), **meta},
    )
