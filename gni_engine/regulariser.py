"""The explicit regulariser R of Gaussian noise injections, its Monte-Carlo check, and a slow reference.

.. math::

    R = \\mathbb{E}_x\\Big[\\tfrac12 \\sum_{k=0}^{L-1} \\sigma_k^2\\,
        \\mathrm{Tr}\\big(J_k^\\top H_L J_k\\big)\\Big],\\qquad J_k = \\partial f/\\partial h_k,

with Tr(diag(h_k²) J_kᵀ H_L J_k) for multiplicative noise. Writing H_L = S Sᵀ (S = I for the
squared error ½‖y − f‖², s_c = √p_c (e_c − p) for softmax cross-entropy),
Tr(J_kᵀ H_L J_k) = Σ_c ‖J_kᵀ s_c‖²: d_L vector–Jacobian products give every layer's term at once
(one for a scalar output). The one-draw estimator replaces S by one v with E[v vᵀ] = H_L.
Everything here is differentiable in the parameters, so a network can be trained on R.

>>> import torch
>>> from gni_engine.networks import MLP
>>> net = MLP(1, (4,), 1, activation="linear").double()
>>> x = torch.linspace(0, 1, 5, dtype=torch.float64).unsqueeze(1)
>>> fast = explicit_regulariser(net, x, loss="mse", sigma=0.1)
>>> slow = reference_regulariser(net, x, loss="mse", sigma=0.1)
>>> bool(torch.allclose(fast, slow, rtol=1e-12))
True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.func import jacrev, vmap

from gni_engine.losses import LossName, hessian_factor, hessian_one_draw, run_losses
from gni_engine.networks import Network
from gni_engine.noise import NoisePlan, NoiseSampler, NoiseScales
from gni_engine.stacked import Forward, StackedMLP, StackedNetwork, view_as_stacked

Estimator = Literal["exact", "one_draw"]
Method = Literal["auto", "chain", "autograd"]


def stacked_regulariser(
    net: StackedNetwork,
    x: torch.Tensor,
    scales: NoiseScales,
    loss: LossName,
    *,
    estimator: Estimator = "exact",
    generators: Sequence[torch.Generator | None] | None = None,
    draw: Sequence[bool] | None = None,
    method: Method = "auto",
    create_graph: bool = True,
    forward: Forward | None = None,
) -> torch.Tensor:
    """Per-run, per-layer terms of R, averaged over the batch: (E, L); their sum over L is R.

    ``forward`` may pass a clean forward pass of ``x`` already computed (its inputs must require
    grad for the autograd method) so that training does not repeat it.

    x: (E, N, …). ``method='chain'`` (MLPs) writes J_kᵀ v as an explicit backward recursion;
    ``'autograd'`` asks autograd for the same vector–Jacobian products (any network).
    """
    use_chain = isinstance(net, StackedMLP) and method != "autograd"
    if method == "chain" and not isinstance(net, StackedMLP):
        raise ValueError("method='chain' needs an MLP")
    with torch.enable_grad():
        if forward is None:
            x_in = x if use_chain or x.requires_grad else x.detach().requires_grad_(True)
            fwd = net.forward(x_in)
        else:
            fwd = forward
        if estimator == "exact":
            v = hessian_factor(loss, fwd.output)
        else:
            v = hessian_one_draw(loss, fwd.output, list(generators or [None] * net.n_runs), draw)
        if use_chain:
            assert isinstance(net, StackedMLP)
            vjps = net.input_vjps(fwd, v)
        else:
            vjps = _autograd_vjps(fwd, v, create_graph=create_graph)
        return _terms(fwd, vjps, scales)


def _autograd_vjps(fwd: Forward, v: torch.Tensor, *, create_graph: bool) -> list[torch.Tensor]:
    per_vector: list[Sequence[torch.Tensor]] = []
    for r in range(v.shape[1]):
        grads = torch.autograd.grad(
            fwd.output, fwd.inputs, grad_outputs=v[:, r], create_graph=create_graph, retain_graph=True
        )
        per_vector.append(grads)
    return [torch.stack([g[k] for g in per_vector], dim=1) for k in range(len(fwd.inputs))]  # (E, R, N, …)


def _terms(fwd: Forward, vjps: list[torch.Tensor], scales: NoiseScales) -> torch.Tensor:
    terms = []
    for k, a in enumerate(vjps):
        e, r, n = a.shape[:3]
        add = scales.additive[:, k]
        mul = scales.multiplicative[:, k]
        term = torch.zeros(e, dtype=a.dtype, device=a.device)
        if scales.has_additive[k]:
            flat = a.reshape(e, 1, -1)  # Σ over vectors, examples and features of a²: one batched dot
            term = term + add.pow(2) * torch.bmm(flat, flat.transpose(1, 2)).reshape(e) / n
        if scales.has_multiplicative[k]:
            h = fwd.inputs[k].unsqueeze(1)
            term = term + mul.pow(2) * (h * a).reshape(e, r, n, -1).pow(2).sum((1, 3)).mean(1)
        terms.append(0.5 * term)
    return torch.stack(terms, dim=1)


def _sigma_list(sigma: float | Sequence[float], points: int) -> list[float]:
    values = [float(sigma)] * points if isinstance(sigma, int | float) else [float(s) for s in sigma]
    if len(values) != points:
        raise ValueError(f"{len(values)} sigmas for {points} injection points")
    return values


def _module_scales(net: Network, sigma: float | Sequence[float], noise: str, x: torch.Tensor) -> NoiseScales:
    sig = _sigma_list(sigma, net.injection_points)
    return NoiseScales.from_sigmas([sig], [noise], dtype=x.dtype, device=x.device)


def explicit_regulariser(
    model: Network,
    x: torch.Tensor,
    *,
    loss: LossName,
    sigma: float | Sequence[float],
    noise: str = "additive",
    estimator: Estimator = "exact",
    generator: torch.Generator | None = None,
    method: Method = "auto",
) -> torch.Tensor:
    """R's per-layer terms (k = 0 is the input) for one network, averaged over the batch ``x`` (N, …).

    ``sigma`` is the standard deviation (one value or one per injection point). Returns shape (L,),
    differentiable with respect to the model's parameters.
    """
    stacked = view_as_stacked(model)
    scales = _module_scales(model, sigma, noise, x)
    return stacked_regulariser(
        stacked, x.unsqueeze(0), scales, loss, estimator=estimator, generators=[generator], method=method
    )[0]


def reference_regulariser(
    model: Network,
    x: torch.Tensor,
    *,
    loss: LossName,
    sigma: float | Sequence[float],
    noise: str = "additive",
) -> torch.Tensor:
    """Slow, obviously correct R: full per-example Jacobians (``jacrev`` under ``vmap``), in float64."""
    net = copy.deepcopy(model).double()
    xd = x.double()
    sig = _sigma_list(sigma, net.injection_points)
    with torch.no_grad():
        hs = net.clean_activations(xd)
        out = net.forward_from(0, xd)
    d = out.shape[-1]
    if loss == "mse":
        hess = torch.eye(d, dtype=torch.float64).expand(out.shape[0], d, d)
    else:
        p = torch.softmax(out, -1)
        hess = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    terms = []
    for k, h in enumerate(hs):
        jac = vmap(jacrev(lambda v, k=k: net.forward_from(k, v.unsqueeze(0)).squeeze(0)))(
            h
        )  # (N, d_L, *shape)
        jac = jac.reshape(jac.shape[0], d, -1)
        inner = torch.einsum("nci,ncd,ndi->ni", jac, hess, jac)  # diag of Jᵀ H J, per example
        if noise == "multiplicative":
            inner = inner * h.reshape(h.shape[0], -1).pow(2)
        terms.append(0.5 * sig[k] ** 2 * inner.sum(-1).mean())
    return torch.stack(terms)


@dataclass(frozen=True)
class NoiseGapEstimate:
    """Monte-Carlo estimate of E[L(noisy)] − L(clean): mean, standard error, number of antithetic pairs."""

    mean: float
    stderr: float
    samples: int


def stacked_noise_gap(
    net: StackedNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    scales: NoiseScales,
    loss: LossName,
    *,
    samples: int,
    generators: Sequence[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-run mean and standard error (E,) of E[L(noisy)] − L(clean) from antithetic pairs (ε, −ε).

    Each pair contributes ½(L(ε) + L(−ε)) − L(clean), which cancels the odd orders of the expansion.
    """
    plan = NoisePlan(scales, net.point_sizes())
    with torch.no_grad():
        clean = run_losses(loss, net.forward(x).output, y)
        pairs = []
        for _ in range(samples):
            sampler = NoiseSampler(plan, generators, n_examples=int(x.shape[1]))
            plus = run_losses(loss, net.forward(x, sampler.perturb(1.0)).output, y)
            minus = run_losses(loss, net.forward(x, sampler.perturb(-1.0)).output, y)
            pairs.append(0.5 * (plus + minus) - clean)
        values = torch.stack(pairs)  # (S, E)
        mean = values.mean(0)
        if samples > 1:
            stderr = values.std(0, unbiased=True) / math.sqrt(samples)
        else:
            stderr = torch.full_like(mean, float("nan"))
    return mean, stderr


def noise_gap(
    model: Network,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: LossName,
    sigma: float | Sequence[float],
    noise: str = "additive",
    samples: int = 64,
    generator: torch.Generator | None = None,
) -> NoiseGapEstimate:
    """E[L(noisy)] − L(clean) for one network, estimated with ``samples`` antithetic pairs."""
    gen = generator if generator is not None else torch.Generator(device=x.device)
    scales = _module_scales(model, sigma, noise, x)
    target = y.unsqueeze(0)
    mean, stderr = stacked_noise_gap(
        view_as_stacked(model), x.unsqueeze(0), target, scales, loss, samples=samples, generators=[gen]
    )
    return NoiseGapEstimate(float(mean[0]), float(stderr[0]), samples)
