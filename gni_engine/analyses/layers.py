r"""Layer-to-layer Jacobian norms of MLPs (DIGEST §3, §4.2).

Hidden layer k+1 computes :math:`h_{k+1} = \varphi(z_{k+1})`, :math:`z_{k+1} = W_k^\top h_k + b_k`
(stacked layout: ``weights[k]`` is (E, d_k, d_{k+1})). Its Jacobian with respect to the previous
hidden layer is :math:`\partial h_{k+1}/\partial h_k = \mathrm{diag}(\varphi'(z_{k+1}))\,W_k^\top`, so

.. math:: \Big\|\frac{\partial h_{k+1}}{\partial h_k}\Big\|_F^2
    = \sum_j \varphi'(z_{k+1,j})^2 \,\|W_{k,:,j}\|^2,

exact for any activation; for ReLU it is :math:`\|\tilde W_k\|_F`, the weights with the rows of
inactive units zeroed. Map i (i = 1 … H−1 for H hidden layers) goes from hidden layer i to i+1.

>>> w = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (E=1, d_k=2, d_{k+1}=2)
>>> z = torch.tensor([[[1.0, -1.0]]])  # unit 2 inactive under ReLU
>>> float(layer_map_norms(w, z, "relu")[0, 0])  # ‖(1, 3)‖ = √10
3.1622776...
"""

from __future__ import annotations

import torch

from gni_engine.networks import activation_derivative
from gni_engine.stacked import Forward, StackedMLP


def layer_map_norms(weight: torch.Tensor, pre_activation: torch.Tensor, activation: str) -> torch.Tensor:
    """Per-example ‖diag(φ'(z)) Wᵀ‖_F: weight (E, d_in, d_out), pre_activation z (E, N, d_out) → (E, N)."""
    column_sq = weight.pow(2).sum(1)  # (E, d_out): ‖W_{:, j}‖² per output unit
    dphi = activation_derivative(activation, pre_activation)  # (E, N, d_out)
    return (dphi.pow(2) * column_sq.unsqueeze(1)).sum(-1).sqrt()


def layer_jacobian_norms(net: StackedMLP, x: torch.Tensor, forward: Forward | None = None) -> torch.Tensor:
    """Batch mean of the per-example Frobenius norm of ∂h_{i+1}/∂h_i for each hidden-to-hidden map.

    x: (E, N, d_0). Returns (E, H−1) for H hidden layers (empty second axis for H < 2).
    """
    fwd = forward if forward is not None else net.forward(x)
    norms = [
        layer_map_norms(net.weights[k], fwd.pre_activations[k], net.activation).mean(-1)  # (E,)
        for k in range(1, len(fwd.pre_activations))
    ]
    if not norms:
        return torch.zeros(net.n_runs, 0, dtype=x.dtype, device=x.device)
    return torch.stack(norms, dim=1)
