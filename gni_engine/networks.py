"""Networks as ``torch.nn`` modules: MLPs and the small convnet of DIGEST §4.4.

Layer k of an MLP computes h_{k+1} = φ(W_k h̃_k + b_k) where h̃_k is layer k's input after noise;
the last layer has no activation. Injection point k (0 = the network input) is the input of linear
layer k, so an MLP with ``len(hidden)`` hidden layers has ``len(hidden) + 1`` injection points and
noise never touches the output. The linear layers are ``self.layers[i]`` (``nn.Linear``), so weights
export as ``layers.{i}.weight`` / ``layers.{i}.bias``.

>>> import torch
>>> net = MLP(2, (3,), 1, activation="tanh")
>>> [name for name, _ in net.named_parameters()]
['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gni_engine.spec import ConvNetSpec, MLPSpec, RunSpec

ActivationFn = Callable[[torch.Tensor], torch.Tensor]


def activation_fn(name: str) -> ActivationFn:
    if name == "relu":
        return torch.relu
    if name == "elu":
        return F.elu
    if name == "tanh":
        return torch.tanh
    if name == "gelu":
        return F.gelu
    if name == "linear":
        return _identity
    raise ValueError(f"unknown activation {name!r}")


def activation_derivative(name: str, z: torch.Tensor) -> torch.Tensor:
    """φ'(z), written out so that it stays differentiable (needed to train through R).

    For ReLU φ'' = 0 almost everywhere, so the mask carries no gradient, as autograd's would.
    """
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "elu":
        return torch.where(z > 0, torch.ones_like(z), torch.exp(torch.clamp(z, max=0.0)))
    if name == "tanh":
        t = torch.tanh(z)
        return 1 - t * t
    if name == "gelu":  # exact GELU: z Φ(z); derivative Φ(z) + z φ(z)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return cdf + z * pdf
    if name == "linear":
        return torch.ones_like(z)
    raise ValueError(f"unknown activation {name!r}")


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


class NoiseInjection(nn.Module):
    """Gaussian noise on one injection point, active only in training mode.

    additive: h̃ = h + σ ε; multiplicative: h̃ = h ∘ (1 + σ ε); ε ~ N(0, I) drawn from ``generator``,
    or taken from ``eps`` when the network drew all its points' noise at once.
    """

    def __init__(self, sigma: float, kind: str, generator: torch.Generator | None) -> None:
        super().__init__()
        self.sigma = sigma
        self.kind = kind
        self.generator = generator

    def forward(self, h: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or self.sigma == 0.0:
            return h
        if eps is None:
            eps = torch.randn(h.shape, generator=self.generator, dtype=h.dtype, device=h.device)
        if self.kind == "additive":
            return h + self.sigma * eps
        return h * (1 + self.sigma * eps)


class MLP(nn.Module):
    """Fully connected network with optional Gaussian noise injections (see module docstring)."""

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int],
        n_outputs: int,
        *,
        activation: str = "relu",
        bias: bool = True,
        sigmas: Sequence[float] | None = None,
        noise_kind: str = "additive",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        dims = [n_inputs, *hidden, n_outputs]
        self.activation = activation
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        sig = list(sigmas) if sigmas is not None else [0.0] * len(self.layers)
        if len(sig) != len(self.layers):
            raise ValueError(f"{len(sig)} sigmas for {len(self.layers)} injection points")
        self.noise = nn.ModuleList(NoiseInjection(s, noise_kind, generator) for s in sig)

    @property
    def injection_points(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = activation_fn(self.activation)
        eps = self._draw_noise(x)
        h = x
        last = len(self.layers) - 1
        for k, (noise, layer) in enumerate(zip(self.noise, self.layers, strict=True)):
            h = layer(noise(h, None if eps is None else eps[k]))
            if k < last:
                h = phi(h)
        return h

    def _draw_noise(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """All points' ε of one forward pass in one draw (the order the stacked trainer uses too)."""
        if not self.training or all(n.sigma == 0.0 for n in self.noise):
            return None
        n = x.shape[0]
        sizes = [n * _in_features(layer) for layer in self.layers]
        first = self.noise[0]
        assert isinstance(first, NoiseInjection)
        generator = first.generator
        flat = torch.randn(sum(sizes), generator=generator, dtype=x.dtype, device=x.device)
        return [part.reshape(n, -1) for part in torch.split(flat, sizes)]

    def forward_from(self, k: int, h_k: torch.Tensor) -> torch.Tensor:
        """The clean map from injection point k to the output (used by the reference Jacobians)."""
        phi = activation_fn(self.activation)
        h = h_k
        last = len(self.layers) - 1
        for i in range(k, len(self.layers)):
            h = self.layers[i](h)
            if i < last:
                h = phi(h)
        return h

    def clean_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """h_0 = x, h_1, …, h_{L-1}: the clean values at every injection point."""
        phi = activation_fn(self.activation)
        hs = [x]
        h = x
        for layer in self.layers[:-1]:
            h = phi(layer(h))
            hs.append(h)
        return hs


class ConvNet(nn.Module):
    """conv c₁ k×k stride s → φ → conv c₂ k×k stride s → φ → flatten → dense (DIGEST §4.4).

    Injection points: the input image, the first and the second conv outputs (post-activation).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_outputs: int,
        spec: ConvNetSpec,
        *,
        sigmas: Sequence[float] | None = None,
        noise_kind: str = "additive",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        c1, c2 = spec.channels
        k, s = spec.kernel_size, spec.stride
        self.activation = spec.activation
        self.convs = nn.ModuleList(
            [nn.Conv2d(c, c1, k, stride=s, bias=spec.bias), nn.Conv2d(c1, c2, k, stride=s, bias=spec.bias)]
        )
        for _ in range(2):
            h, w = (h - k) // s + 1, (w - k) // s + 1
        if h < 1 or w < 1:
            raise ValueError(
                f"input {tuple(input_shape)} is too small for two {k}x{k} stride-{s} convolutions"
            )
        self.flat_features = c2 * h * w
        self.dense = nn.Linear(self.flat_features, n_outputs, bias=spec.bias)
        sig = list(sigmas) if sigmas is not None else [0.0] * 3
        self.noise = nn.ModuleList(NoiseInjection(x, noise_kind, generator) for x in sig)

    injection_points = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phi = activation_fn(self.activation)
        h = self.noise[0](x)
        h = self.noise[1](phi(self.convs[0](h)))
        h = self.noise[2](phi(self.convs[1](h)))
        out: torch.Tensor = self.dense(h.flatten(1))
        return out

    def forward_from(self, k: int, h_k: torch.Tensor) -> torch.Tensor:
        phi = activation_fn(self.activation)
        h = h_k
        for i in range(k, 2):
            h = phi(self.convs[i](h))
        out: torch.Tensor = self.dense(h.flatten(1))
        return out

    def clean_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        phi = activation_fn(self.activation)
        h1 = phi(self.convs[0](x))
        return [x, h1, phi(self.convs[1](h1))]


Network = MLP | ConvNet


def build_network(
    spec: RunSpec,
    input_shape: Sequence[int],
    n_outputs: int,
    *,
    generator: torch.Generator | None = None,
    noise_generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Network:
    """The spec's network with its noise, initialised from ``generator`` (float64 draws, then cast)."""
    sigmas = spec.injection_sigmas() if spec.training.mode == "gni" else None
    net: Network
    if isinstance(spec.model, MLPSpec):
        net = MLP(
            math.prod(input_shape),
            spec.model.hidden,
            n_outputs,
            activation=spec.model.activation,
            bias=spec.model.bias,
            sigmas=sigmas,
            noise_kind=spec.noise.kind,
            generator=noise_generator,
        )
    else:
        net = ConvNet(
            input_shape,
            n_outputs,
            spec.model,
            sigmas=sigmas,
            noise_kind=spec.noise.kind,
            generator=noise_generator,
        )
    initialise(net, spec.model.init, generator)
    return net.to(dtype)


@torch.no_grad()
def initialise(net: nn.Module, scheme: str, generator: torch.Generator | None) -> None:
    """PyTorch's default init (U(±1/√fan_in) for weights and biases) or Glorot-uniform weights, zero bias.

    Drawn in float64 layer by layer (weight, then bias) so a seed gives the same weights at every precision.
    """
    for module in net.modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        weight = module.weight
        fan_in = math.prod(weight.shape[1:])
        fan_out = weight.shape[0] * math.prod(weight.shape[2:])
        bound = 1 / math.sqrt(fan_in) if scheme == "default" else math.sqrt(6 / (fan_in + fan_out))
        draw = torch.rand(weight.shape, generator=generator, dtype=torch.float64) * 2 - 1
        weight.copy_(draw * bound)
        if module.bias is not None:
            if scheme == "default":
                b = torch.rand(module.bias.shape, generator=generator, dtype=torch.float64) * 2 - 1
                module.bias.copy_(b / math.sqrt(fan_in))
            else:
                module.bias.zero_()


def _in_features(layer: nn.Module) -> int:
    assert isinstance(layer, nn.Linear)
    return layer.in_features
