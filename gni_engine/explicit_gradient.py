"""The explicit mode's objective and its exact gradient written out by hand, for piecewise-linear MLPs.

Training on R with autograd differentiates the vector–Jacobian recursion that computes R, and then
back-propagates the clean loss separately: per hidden layer that is 6 matrix products against a clean
step's 3. For the squared error ½‖y − f‖² (H_L = I), additive noise and an activation whose φ'' is zero
(ReLU, linear) the same gradient needs 4, because the clean loss's backward pass is already contained
in the Jacobian recursion. With z_k = h_k W_k + b_k, u_{L-1} = I (one row per output c and example),
``a_k = u_k W_kᵀ = ∂f/∂h_k`` and ``u_{k-1} = φ'(z_{k-1}) ∘ a_k``:

.. math::

    T = \\frac1N\\sum_n \\tfrac12\\lVert f_n - y_n\\rVert^2
        + \\sum_k \\frac{\\sigma_k^2}{2N}\\sum_{n,c}\\lVert a_k^{c}(n)\\rVert^2,

    \\bar a_0 = \\tfrac{\\sigma_0^2}{N} a_0,\\qquad
    \\bar a_k = \\tfrac{\\sigma_k^2}{N} a_k + \\varphi'(z_{k-1}) \\circ (\\bar a_{k-1} W_{k-1}),

    \\frac{\\partial T}{\\partial W_k} = \\sum_{n,c}\\big(r_{n,c}\\, h_k(n) + \\bar a_k^{c}(n)\\big)\\,
        u_k^{c}(n)^\\top,\\qquad
    \\frac{\\partial T}{\\partial b_k} = \\sum_{n,c} r_{n,c}\\, u_k^{c}(n),
    \\qquad r = (f - y)/N,

since the clean loss's error signal at z_k is Σ_c r_c u_k^c. Forward, recursion, adjoint and one
product for both gradient terms: 4 products per layer. ``tests/engine/test_explicit_gradient.py``
compares it with autograd through :func:`gni_engine.regulariser.stacked_regulariser` in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gni_engine.losses import LossName
from gni_engine.noise import NoiseScales
from gni_engine.stacked import StackedMLP, StackedNetwork

PIECEWISE_LINEAR = ("relu", "linear")


@dataclass
class ExplicitObjective:
    """Per-run clean loss (E,), R per layer (E, L) and dT/dθ in ``net.parameters()`` order."""

    loss: torch.Tensor
    regulariser: torch.Tensor
    gradients: list[torch.Tensor]


def hand_gradient_applies(net: StackedNetwork, loss: LossName, scales: NoiseScales) -> bool:
    """Whether :func:`explicit_objective` covers this case (else autograd's double backward does)."""
    return (
        isinstance(net, StackedMLP)
        and net.activation in PIECEWISE_LINEAR
        and loss == "mse"
        and not any(scales.has_multiplicative)
    )


def _gate(activation: str, on: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
    """φ'(z) ∘ a with a (E, C, N, d); ``on`` = (z > 0) as (E, 1, N, d) for ReLU, unused for linear."""
    if activation == "relu":
        assert on is not None
        return torch.where(on, a, 0.0)
    return a


def explicit_objective(
    net: StackedMLP, x: torch.Tensor, y: torch.Tensor, scales: NoiseScales
) -> ExplicitObjective:
    """T = clean squared-error loss + R for every run, and its exact gradient (see module docstring).

    x: (E, N, d_0), y: (E, N, C); ``scales.additive`` (E, L) holds each run's σ_k (zero rows train on
    the clean loss alone). No autograd graph is built.
    """
    weights = net.weights
    n_layers = len(weights)
    with torch.no_grad():
        fwd = net.forward(x)
        f = fwd.output  # (E, N, C)
        e, n, c = f.shape
        diff = f - y
        loss = 0.5 * diff.pow(2).sum(-1).mean(-1)  # (E,)
        resid = (diff / n).transpose(1, 2).reshape(e, 1, c * n)  # (E, 1, C·N), rows ordered (c, n)

        # ReLU's derivative as a mask, computed once per layer (both passes below use it)
        masks = [(z > 0).unsqueeze(1) if net.activation == "relu" else None for z in fwd.pre_activations]
        # u_k and a_k = ∂f/∂h_k, C·N rows each, from the output down
        eye = torch.eye(c, dtype=f.dtype, device=f.device)
        u = eye.reshape(1, c, 1, c).expand(e, c, n, c).reshape(e, c * n, c)  # (E, C·N, C)
        us: list[torch.Tensor] = [u] * n_layers
        jac: list[torch.Tensor] = [u] * n_layers
        for k in range(n_layers - 1, -1, -1):
            if k < n_layers - 1:
                gated = _gate(net.activation, masks[k], jac[k + 1].reshape(e, c, n, -1))
                u = gated.reshape(e, c * n, -1)  # (E, C·N, d_{k+1})
                us[k] = u
            jac[k] = torch.bmm(u, weights[k].transpose(1, 2))  # (E, C·N, d_k)

        sigma2 = scales.additive.pow(2)  # (E, L)
        squares = torch.stack(
            [torch.bmm(a.reshape(e, 1, -1), a.reshape(e, -1, 1)).reshape(e) for a in jac], dim=1
        )  # (E, L): Σ_{n,c} ‖a_k‖²
        regulariser = 0.5 * sigma2 * squares / n

        coef = (sigma2 / n).unsqueeze(-1)  # (E, L, 1)
        weight_grads: list[torch.Tensor] = []
        bias_grads: list[torch.Tensor] = []
        adjoint: torch.Tensor | None = None  # ā_k, (E, C·N, d_k)
        for k in range(n_layers):
            if adjoint is not None:
                back = torch.bmm(adjoint, weights[k - 1])  # ā_{k-1} W_{k-1}: (E, C·N, d_k)
                gated = _gate(net.activation, masks[k - 1], back.reshape(e, c, n, -1))
                adjoint = torch.addcmul(gated.reshape(e, c * n, -1), jac[k], coef[:, k : k + 1])
            elif scales.has_additive[k]:
                adjoint = jac[k] * coef[:, k : k + 1]
            h = fwd.inputs[k].unsqueeze(1)  # (E, 1, N, d_k)
            r = diff.transpose(1, 2).unsqueeze(-1) / n  # (E, C, N, 1)
            if adjoint is None:
                source = (r * h).reshape(e, c * n, -1)  # r ⊗ h_k
            else:  # r ⊗ h_k + ā_k in one pass
                source = torch.addcmul(adjoint.reshape(e, c, n, -1), r, h).reshape(e, c * n, -1)
            weight_grads.append(torch.bmm(source.transpose(1, 2), us[k]))  # (E, d_k, d_{k+1})
            if net.biases is not None:
                bias_grads.append(torch.bmm(resid, us[k]))  # (E, 1, d_{k+1})
    return ExplicitObjective(loss, regulariser, [*weight_grads, *bias_grads])
