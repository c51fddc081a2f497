"""E networks of one architecture held as stacked tensors, so that a batch of runs is one set of kernels.

Shapes use E = runs, N = examples, d_k = width at injection point k. An MLP's layer k holds
``weights[k]`` of shape (E, d_k, d_{k+1}) and ``biases[k]`` of shape (E, 1, d_{k+1}) and computes
``baddbmm(b, h, W)``; the convnet stacks its runs as grouped convolutions (groups = E).

``forward`` takes an optional ``perturb(k, h)`` that returns the noisy value at injection point k,
which is how training noise, antithetic Monte-Carlo draws and the clean evaluation share one code path.
An MLP's forward can also take ``activate(k, h, W, b, activation)``, which returns the noisy value at
point k ≥ 1 straight from the layer's input and weights (counter noise: a matrix product, then bias,
activation and noise in one kernel; or all of it in one fused GEMM); the pre-activations are then
not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gni_engine.networks import MLP, ConvNet, Network, activation_derivative, activation_fn

Perturb = Callable[[int, torch.Tensor], torch.Tensor]
Activate = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor | None, str], torch.Tensor]
# finish(k, h, W, b, activation, W_out, b_out): the last hidden layer and the output layer together,
# or None where it does not apply (the forward pass then goes on layer by layer)
Finish = Callable[
    [int, torch.Tensor, torch.Tensor, torch.Tensor | None, str, torch.Tensor, torch.Tensor | None],
    torch.Tensor | None,
]


@dataclass
class Forward:
    """Output and internals of a stacked forward pass."""

    output: torch.Tensor  # (E, N, d_L)
    # value entering each injection point's layer, after perturbation: (E, N, ...); without the last
    # point's where ``finish`` computed the output from the layer before
    inputs: list[torch.Tensor]
    pre_activations: list[torch.Tensor]  # MLP: z_k of hidden layer k, (E, N, d_{k+1}); [] when fused


class StackedMLP:
    """E MLPs of one shape (see module docstring)."""

    def __init__(
        self, weights: list[torch.Tensor], biases: list[torch.Tensor] | None, activation: str
    ) -> None:
        self.weights = weights
        self.biases = biases
        self.activation = activation

    @property
    def n_runs(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def injection_points(self) -> int:
        return len(self.weights)

    def point_sizes(self) -> list[int] | None:
        """Features per example at each injection point."""
        return [int(w.shape[1]) for w in self.weights]

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *(self.biases or [])]

    def forward(
        self,
        x: torch.Tensor,
        perturb: Perturb | None = None,
        activate: Activate | None = None,
        finish: Finish | None = None,
    ) -> Forward:
        """``finish`` (with ``activate``): computes the last hidden layer and the output layer at once
        where it can (the folded kernels), so the last hidden value is never materialised."""
        phi = activation_fn(self.activation)
        h = x  # (E, N, d_0)
        inputs: list[torch.Tensor] = []
        pre: list[torch.Tensor] = []
        last = len(self.weights) - 1
        for k, w in enumerate(self.weights):
            if perturb is not None and (k == 0 or activate is None):
                h = perturb(k, h)
            inputs.append(h)
            bias = self.biases[k] if self.biases is not None else None
            if k == last - 1 and activate is not None and finish is not None:
                out_bias = self.biases[last] if self.biases is not None else None
                out = finish(k + 1, h, w, bias, self.activation, self.weights[last], out_bias)
                if out is not None:
                    return Forward(out, inputs, pre)
            if k < last and activate is not None:
                h = activate(k + 1, h, w, bias, self.activation)
                continue
            z = torch.baddbmm(bias, h, w) if bias is not None else torch.bmm(h, w)  # (E, N, d_{k+1})
            if k < last:
                pre.append(z)
                h = phi(z)
            else:
                h = z
        return Forward(h, inputs, pre)

    def input_vjps(self, fwd: Forward, v: torch.Tensor) -> list[torch.Tensor]:
        """a_k = J_kᵀ v at every injection point by one explicit backward recursion.

        v: (E, R, N, d_L), R vectors per example. Returns a_k: (E, R, N, d_k) for k = 0 … L-1, built from
        ordinary differentiable ops, so autograd can differentiate R once more for training.
        """
        e, r, n, d = v.shape
        a = v.reshape(e, r * n, d)
        out: list[torch.Tensor] = []
        for k in range(len(self.weights) - 1, -1, -1):
            if k < len(self.weights) - 1:
                z = fwd.pre_activations[k].unsqueeze(1)  # (E, 1, N, d_{k+1})
                if self.activation == "relu":  # φ' is a mask: one select instead of building it
                    gated = torch.where(z > 0, a.reshape(e, r, n, -1), 0.0)
                else:
                    gated = a.reshape(e, r, n, -1) * activation_derivative(self.activation, z)
                a = gated.reshape(e, r * n, -1)
            a = torch.bmm(a, self.weights[k].transpose(1, 2))  # (E, R·N, d_k)
            out.append(a.reshape(e, r, n, -1))
        return out[::-1]

    def unstack(self, e: int) -> dict[str, torch.Tensor]:
        """Run e's weights as an ``MLP`` state dict (``layers.{i}.weight`` is (out, in))."""
        state: dict[str, torch.Tensor] = {}
        for i, w in enumerate(self.weights):
            state[f"layers.{i}.weight"] = w[e].detach().t().contiguous()
            if self.biases is not None:
                state[f"layers.{i}.bias"] = self.biases[i][e, 0].detach().clone()
        return state


class StackedConvNet:
    """E convnets as grouped convolutions: input (E, N, C, H, W) is laid out as (N, E·C, H, W)."""

    def __init__(
        self,
        conv_weights: list[torch.Tensor],  # [(E, c1, C, k, k), (E, c2, c1, k, k)]
        conv_biases: list[torch.Tensor] | None,  # [(E, c1), (E, c2)]
        dense_weight: torch.Tensor,  # (E, F, d_L)
        dense_bias: torch.Tensor | None,  # (E, 1, d_L)
        activation: str,
        stride: int,
    ) -> None:
        self.conv_weights = conv_weights
        self.conv_biases = conv_biases
        self.dense_weight = dense_weight
        self.dense_bias = dense_bias
        self.activation = activation
        self.stride = stride

    injection_points = 3

    def point_sizes(self) -> list[int] | None:
        return None  # drawn point by point as the forward pass reaches them

    @property
    def n_runs(self) -> int:
        return int(self.dense_weight.shape[0])

    def parameters(self) -> list[torch.Tensor]:
        extra = [*(self.conv_biases or []), *([self.dense_bias] if self.dense_bias is not None else [])]
        return [*self.conv_weights, self.dense_weight, *extra]

    def _conv(self, i: int, h: torch.Tensor) -> torch.Tensor:
        e, n = h.shape[:2]
        w = self.conv_weights[i]
        grouped = h.transpose(0, 1).reshape(n, e * h.shape[2], *h.shape[3:])  # (N, E·C, H, W)
        b = self.conv_biases[i].reshape(-1) if self.conv_biases is not None else None
        z = F.conv2d(grouped, w.reshape(-1, *w.shape[2:]), b, stride=self.stride, groups=e)
        return z.reshape(n, e, w.shape[1], *z.shape[2:]).transpose(0, 1)  # (E, N, c, H', W')

    def forward(self, x: torch.Tensor, perturb: Perturb | None = None) -> Forward:
        phi = activation_fn(self.activation)
        h = x
        inputs: list[torch.Tensor] = []
        for k in range(3):
            if perturb is not None:
                h = perturb(k, h)
            inputs.append(h)
            if k < 2:
                h = phi(self._conv(k, h))
        flat = h.flatten(2)  # (E, N, F)
        if self.dense_bias is not None:
            out = torch.baddbmm(self.dense_bias, flat, self.dense_weight)
        else:
            out = torch.bmm(flat, self.dense_weight)
        return Forward(out, inputs, [])

    def unstack(self, e: int) -> dict[str, torch.Tensor]:
        state = {
            "convs.0.weight": self.conv_weights[0][e].detach().clone(),
            "convs.1.weight": self.conv_weights[1][e].detach().clone(),
            "dense.weight": self.dense_weight[e].detach().t().contiguous(),
        }
        if self.conv_biases is not None:
            state["convs.0.bias"] = self.conv_biases[0][e].detach().clone()
            state["convs.1.bias"] = self.conv_biases[1][e].detach().clone()
        if self.dense_bias is not None:
            state["dense.bias"] = self.dense_bias[e, 0].detach().clone()
        return state


StackedNetwork = StackedMLP | StackedConvNet


def stack_networks(nets: Sequence[Network], *, requires_grad: bool = True) -> StackedNetwork:
    """Copy E modules of one architecture into fresh stacked leaf tensors (for training)."""
    first = nets[0]

    def stack(
        tensors: Sequence[torch.Tensor], transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        out = torch.stack([transform(t.detach()) for t in tensors]).contiguous()
        return out.requires_grad_(requires_grad)

    if isinstance(first, MLP):
        mlps = [n for n in nets if isinstance(n, MLP)]
        n_layers = len(first.layers)
        weights = [stack([_linear(m, i).weight for m in mlps], lambda t: t.t()) for i in range(n_layers)]
        has_bias = _linear(first, 0).bias is not None
        biases = (
            [stack([_bias(_linear(m, i)) for m in mlps], lambda t: t.unsqueeze(0)) for i in range(n_layers)]
            if has_bias
            else None
        )
        return StackedMLP(weights, biases, first.activation)
    convs = [n for n in nets if isinstance(n, ConvNet)]
    conv_w = [stack([_conv(c, i).weight for c in convs], lambda t: t) for i in range(2)]
    conv_b = (
        [stack([_bias(_conv(c, i)) for c in convs], lambda t: t) for i in range(2)]
        if _conv(first, 0).bias is not None
        else None
    )
    dense_w = stack([c.dense.weight for c in convs], lambda t: t.t())
    dense_b = (
        stack([_bias(c.dense) for c in convs], lambda t: t.unsqueeze(0))
        if first.dense.bias is not None
        else None
    )
    return StackedConvNet(conv_w, conv_b, dense_w, dense_b, first.activation, _conv(first, 0).stride[0])


def view_as_stacked(net: Network) -> StackedNetwork:
    """A differentiable E = 1 view of a module's own parameters (gradients reach the module)."""
    if isinstance(net, MLP):
        weights = [_linear(net, i).weight.t().unsqueeze(0) for i in range(len(net.layers))]
        biases = (
            [_bias(_linear(net, i)).unsqueeze(0).unsqueeze(0) for i in range(len(net.layers))]
            if _linear(net, 0).bias is not None
            else None
        )
        return StackedMLP(weights, biases, net.activation)
    conv_b = [_bias(_conv(net, i)).unsqueeze(0) for i in range(2)] if _conv(net, 0).bias is not None else None
    dense_b = _bias(net.dense).unsqueeze(0).unsqueeze(0) if net.dense.bias is not None else None
    return StackedConvNet(
        [_conv(net, i).weight.unsqueeze(0) for i in range(2)],
        conv_b,
        net.dense.weight.t().unsqueeze(0),
        dense_b,
        net.activation,
        _conv(net, 0).stride[0],
    )


def _linear(net: MLP, i: int) -> nn.Linear:
    layer = net.layers[i]
    assert isinstance(layer, nn.Linear)
    return layer


def _conv(net: ConvNet, i: int) -> nn.Conv2d:
    layer = net.convs[i]
    assert isinstance(layer, nn.Conv2d)
    return layer


def _bias(layer: nn.Linear | nn.Conv2d) -> torch.Tensor:
    assert layer.bias is not None
    return layer.bias
