"""Layer-to-layer Jacobian norms: closed forms and the autograd Jacobian."""

from __future__ import annotations

import math

import torch
from torch.func import jacrev

from gni_engine.analyses.layers import layer_jacobian_norms, layer_map_norms
from gni_engine.networks import activation_fn
from gni_engine.stacked import StackedMLP


def test_linear_layer_norm_is_frobenius_norm_of_w():
    w = torch.tensor([[[1.0, 2.0, 0.0], [-2.0, 0.5, 3.0]]], dtype=torch.float64)  # (1, 2, 3)
    z = torch.randn(1, 4, 3, dtype=torch.float64)
    norms = layer_map_norms(w, z, "linear")
    assert torch.allclose(norms, torch.full((1, 4), math.sqrt(1 + 4 + 4 + 0.25 + 9), dtype=torch.float64))


def test_relu_layer_norm_zeroes_inactive_units_by_hand():
    # Units 0 and 2 active, unit 1 inactive: ‖W̃‖_F² = (1² + 2²) + (0² + 3²) = 14.
    w = torch.tensor([[[1.0, 5.0, 0.0], [2.0, 7.0, 3.0]]], dtype=torch.float64)
    z = torch.tensor([[[0.3, -1.0, 2.0]]], dtype=torch.float64)
    assert math.isclose(float(layer_map_norms(w, z, "relu")[0, 0]), math.sqrt(14.0), rel_tol=1e-12)


def test_layer_jacobian_norms_equal_autograd_jacobians_for_smooth_activation():
    g = torch.Generator().manual_seed(0)
    dims = [3, 5, 4, 6, 2]
    weights = [
        torch.randn(2, a, b, generator=g, dtype=torch.float64)
        for a, b in zip(dims[:-1], dims[1:], strict=True)
    ]
    biases = [torch.randn(2, 1, b, generator=g, dtype=torch.float64) for b in dims[1:]]
    net = StackedMLP(weights, biases, "tanh")
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    fast = layer_jacobian_norms(net, x)  # (E, 2): maps h1→h2 and h2→h3
    phi = activation_fn("tanh")
    hidden = net.forward(x)
    for e in range(2):
        for i in (1, 2):
            h_prev = phi(hidden.pre_activations[i - 1][e])  # (N, d_i)

            def layer(h, e=e, i=i):
                return phi(h @ weights[i][e] + biases[i][e, 0])

            norms = [jacrev(layer)(h_prev[n]).norm() for n in range(7)]
            assert math.isclose(float(fast[e, i - 1]), float(torch.stack(norms).mean()), rel_tol=1e-12)
