"""Gaussian noise injections on stacked networks.

Every run e of a batch has, at every injection point k, an additive and a multiplicative scale, so
that one formula serves both kinds and a batch may mix them:

.. math::

    \\tilde h_k = h_k + \\varepsilon_k \\circ (a_{e,k} + m_{e,k} h_k),
    \\qquad \\varepsilon_k \\sim N(0, I)

(additive noise: a = σ, m = 0; multiplicative: a = 0, m = σ, i.e. h̃ = h ∘ (1 + σ ε)).
Run e's draws come from its own generator, in a fixed order (point by point), so a run draws the
same noise whether it trains alone or stacked with others.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gni_engine.stacked import Perturb


@dataclass(frozen=True)
class NoiseScales:
    """Per-run, per-point coefficients: ``additive`` and ``multiplicative`` of shape (E, L)."""

    additive: torch.Tensor
    multiplicative: torch.Tensor

    @classmethod
    def from_sigmas(
        cls,
        sigmas: Sequence[Sequence[float]],
        kinds: Sequence[str],
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> NoiseScales:
        s = torch.tensor([list(row) for row in sigmas], dtype=dtype, device=device)  # (E, L)
        mult = torch.tensor([k == "multiplicative" for k in kinds], device=device).unsqueeze(1)
        zero = torch.zeros_like(s)
        return cls(torch.where(mult, zero, s), torch.where(mult, s, zero))

    @functools.cached_property
    def has_additive(self) -> list[bool]:
        """Per point: does any run inject additive noise there."""
        flags: list[bool] = (self.additive != 0).any(0).tolist()
        return flags

    @functools.cached_property
    def has_multiplicative(self) -> list[bool]:
        flags: list[bool] = (self.multiplicative != 0).any(0).tolist()
        return flags

    @property
    def active(self) -> torch.Tensor:
        """(E, L) bool: where run e injects noise at point k."""
        return (self.additive != 0) | (self.multiplicative != 0)

    def scaled(self, mask: torch.Tensor) -> NoiseScales:
        """Scales zeroed for the runs where ``mask`` (E,) is false."""
        m = mask.to(self.additive.dtype).unsqueeze(1)
        return NoiseScales(self.additive * m, self.multiplicative * m)


def draw_stacked_normal(
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    draw: Sequence[bool],
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """(E, *shape) standard normals; run e draws from ``generators[e]`` where ``draw[e]``, else zeros."""
    every = all(draw)
    out = (torch.empty if every else torch.zeros)((len(generators), *shape), dtype=dtype, device=device)
    for e, (generator, wanted) in enumerate(zip(generators, draw, strict=True)):
        if wanted:
            out[e].normal_(generator=generator)
    return out


class NoisePlan:
    """What a batch's noise looks like, computed once: which runs and points draw, and how.

    ``point_sizes`` (features per example at each point, MLPs) lets every run draw all points of a
    forward pass in one call; without it (convnets) each point is drawn when the forward reaches it.
    """

    def __init__(self, scales: NoiseScales, point_sizes: Sequence[int] | None = None) -> None:
        active = scales.active
        self.scales = scales
        self.point_sizes = list(point_sizes) if point_sizes is not None else None
        self.active_rows: list[list[bool]] = active.tolist()
        self.run_draws: list[bool] = active.any(1).tolist()
        self.point_active: list[bool] = active.any(0).tolist()
        self.has_additive = scales.has_additive
        self.has_multiplicative = scales.has_multiplicative
        self._views: dict[tuple[int, int, float], tuple[torch.Tensor, torch.Tensor]] = {}
        self._columns = [
            (scales.additive[:, k].contiguous(), scales.multiplicative[:, k].contiguous())
            for k in range(scales.additive.shape[1])
        ]

    def coefficients(self, k: int, dims: int, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Point k's additive and multiplicative scales times ``sign``, shaped (E, 1, …), cached."""
        key = (k, dims, sign)
        if key not in self._views:
            view = (-1,) + (1,) * (dims - 1)
            self._views[key] = (
                self.scales.additive[:, k].reshape(view) * sign,
                self.scales.multiplicative[:, k].reshape(view) * sign,
            )
        return self._views[key]

    def columns(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Point k's additive and multiplicative scales as contiguous (E,) tensors."""
        return self._columns[k]

    @property
    def any_noise(self) -> bool:
        return any(self.run_draws)


class NoiseSampler:
    """Draws the noise of one forward pass and can replay it with the sign flipped (antithetic pairs).

    Run e draws only from ``generators[e]``: with known point sizes, one flat draw of all points per
    forward pass (points where the run has σ = 0 included, so its stream does not depend on others);
    otherwise point by point.
    """

    def __init__(
        self,
        plan: NoisePlan | NoiseScales,
        generators: Sequence[torch.Generator],
        n_examples: int | None = None,
    ) -> None:
        self.plan = plan if isinstance(plan, NoisePlan) else NoisePlan(plan)
        self.generators = generators
        self.n_examples = n_examples
        self.draws: dict[int, torch.Tensor] = {}

    def _draw_all(self, h: torch.Tensor) -> None:
        assert self.plan.point_sizes is not None and self.n_examples is not None
        sizes = [self.n_examples * d for d in self.plan.point_sizes]
        flat = draw_stacked_normal(
            (sum(sizes),), self.generators, self.plan.run_draws, dtype=h.dtype, device=h.device
        )
        for k, part in enumerate(torch.split(flat, sizes, dim=1)):
            self.draws[k] = part.reshape(len(self.generators), self.n_examples, -1)  # (E, N, d_k)

    def _noise(self, k: int, h: torch.Tensor) -> torch.Tensor:
        if k not in self.draws:
            if self.plan.point_sizes is not None and self.n_examples is not None:
                self._draw_all(h)
            else:
                wanted = [row[k] for row in self.plan.active_rows]
                self.draws[k] = draw_stacked_normal(
                    h.shape[1:], self.generators, wanted, dtype=h.dtype, device=h.device
                )
        return self.draws[k]

    def perturb(self, sign: float = 1.0) -> Perturb:
        plan = self.plan

        def apply(k: int, h: torch.Tensor) -> torch.Tensor:
            if not plan.point_active[k]:
                return h
            eps = self._noise(k, h)
            a, m = plan.coefficients(k, h.dim(), sign)
            if not plan.has_multiplicative[k]:  # the common case in one fused op: h + ε a
                return torch.addcmul(h, eps, a)
            if not plan.has_additive[k]:  # h (1 + m ε)
                return h * torch.addcmul(torch.ones_like(eps), eps, m)
            return h + eps * (a + m * h)

        return apply
