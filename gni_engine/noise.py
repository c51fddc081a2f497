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


class NoiseSampler:
    """Draws the noise of one forward pass lazily, point by point, and can replay it with the sign flipped."""

    def __init__(self, scales: NoiseScales, generators: Sequence[torch.Generator]) -> None:
        self.scales = scales
        self.generators = generators
        self._active = scales.active.tolist()
        self._has_additive = (scales.additive != 0).any(0).tolist()  # per point
        self._has_multiplicative = (scales.multiplicative != 0).any(0).tolist()
        self.draws: dict[int, torch.Tensor] = {}

    def perturb(self, sign: float = 1.0) -> Perturb:
        def apply(k: int, h: torch.Tensor) -> torch.Tensor:
            wanted = [row[k] for row in self._active]
            if not any(wanted):
                return h
            eps = self.draws.get(k)
            if eps is None:
                eps = draw_stacked_normal(
                    h.shape[1:], self.generators, wanted, dtype=h.dtype, device=h.device
                )
                self.draws[k] = eps
            view = (-1,) + (1,) * (h.dim() - 1)
            a = self.scales.additive[:, k].reshape(view) * sign
            m = self.scales.multiplicative[:, k].reshape(view) * sign
            if not self._has_multiplicative[k]:  # the common case in one fused op: h + ε a
                return torch.addcmul(h, eps, a)
            if not self._has_additive[k]:  # h (1 + m ε)
                return h * torch.addcmul(torch.ones_like(eps), eps, m)
            return h + eps * (a + m * h)

        return apply
