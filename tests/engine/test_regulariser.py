"""The fast explicit regulariser against its slow float64 twin, its estimator, and the MC noise gap."""

from __future__ import annotations

import math

import pytest
import torch

from gni_engine.networks import MLP, ConvNet
from gni_engine.regulariser import explicit_regulariser, noise_gap, reference_regulariser
from gni_engine.spec import ConvNetSpec

CASES = [
    # depth (hidden layers), width, activation, outputs, loss, noise kind
    (0, 5, "relu", 1, "mse", "additive"),
    (1, 7, "tanh", 1, "mse", "multiplicative"),
    (2, 6, "elu", 10, "cross_entropy", "additive"),
    (3, 5, "gelu", 10, "mse", "multiplicative"),
    (4, 8, "relu", 10, "cross_entropy", "multiplicative"),
    (5, 4, "linear", 3, "cross_entropy", "additive"),
    (4, 9, "tanh", 10, "cross_entropy", "additive"),
    (2, 16, "relu", 1, "mse", "additive"),
]


def _net(depth: int, width: int, activation: str, outputs: int, seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(3, (width,) * depth, outputs, activation=activation).double()


@pytest.mark.parametrize(("depth", "width", "activation", "outputs", "loss", "kind"), CASES)
@pytest.mark.parametrize("method", ["chain", "autograd"])
def test_fast_regulariser_equals_float64_reference(depth, width, activation, outputs, loss, kind, method):
    net = _net(depth, width, activation, outputs, seed=depth * 31 + width)
    x = torch.randn(11, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(depth))
    sigmas = [0.3 * (k + 1) if k % 3 != 1 else 0.0 for k in range(depth + 1)]  # includes zeros
    fast = explicit_regulariser(net, x, loss=loss, sigma=sigmas, noise=kind, method=method)
    slow = reference_regulariser(net, x, loss=loss, sigma=sigmas, noise=kind)
    assert slow.sum() > 0
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-12)


def test_regulariser_is_differentiable_and_gradient_matches_reference():
    net = _net(2, 5, "tanh", 4, seed=3)
    x = torch.randn(7, 3, dtype=torch.float64)
    fast = explicit_regulariser(net, x, loss="cross_entropy", sigma=0.4).sum()
    (g_fast,) = torch.autograd.grad(fast, [net.layers[0].weight])
    # finite differences of the reference in one coordinate
    w = net.layers[0].weight
    h = 1e-6
    with torch.no_grad():
        w[1, 2] += h
    up = reference_regulariser(net, x, loss="cross_entropy", sigma=0.4).sum()
    with torch.no_grad():
        w[1, 2] -= 2 * h
    down = reference_regulariser(net, x, loss="cross_entropy", sigma=0.4).sum()
    assert g_fast[1, 2].item() == pytest.approx(((up - down) / (2 * h)).item(), rel=1e-5)


def test_convnet_regulariser_matches_reference():
    torch.manual_seed(0)
    net = ConvNet(
        (2, 10, 10), 3, ConvNetSpec(channels=(3, 4), kernel_size=3, stride=2, activation="elu")
    ).double()
    x = torch.rand(4, 2, 10, 10, dtype=torch.float64)
    for loss in ("mse", "cross_entropy"):
        for kind in ("additive", "multiplicative"):
            fast = explicit_regulariser(net, x, loss=loss, sigma=[0.2, 0.0, 0.5], noise=kind)
            slow = reference_regulariser(net, x, loss=loss, sigma=[0.2, 0.0, 0.5], noise=kind)
            torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(("loss", "outputs"), [("cross_entropy", 6), ("mse", 3)])
def test_one_draw_estimator_is_unbiased(loss, outputs):
    net = _net(2, 8, "tanh", outputs, seed=5)
    x = torch.randn(16, 3, dtype=torch.float64)
    exact = explicit_regulariser(net, x, loss=loss, sigma=0.5).sum().item()
    gen = torch.Generator().manual_seed(11)
    draws = torch.stack(
        [
            explicit_regulariser(net, x, loss=loss, sigma=0.5, estimator="one_draw", generator=gen)
            .sum()
            .detach()
            for _ in range(2000)
        ]
    )
    se = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - exact) < 3 * se
    assert se < 0.1 * exact  # the check has power: 3 s.e. is a tight window


@pytest.mark.parametrize(("loss", "outputs"), [("cross_entropy", 4), ("mse", 3)])
def test_one_draw_estimators_gradient_is_unbiased(loss, outputs):
    # Cross-entropy draws ŷ ~ Cat(p), and p depends on the weights: without the score-function term
    # the draws' mean gradient misses Σ_c ∇p_c ‖J_kᵀ(e_c − p)‖² (off by as much as the gradient itself).
    # One example repeated: the batch mean of R is the mean over its examples' independent draws.
    net = _net(1, 6, "tanh", outputs, seed=3)
    with torch.no_grad():
        net.layers[1].weight.mul_(2)  # confident outputs, where ∇p matters
    x = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    params = list(net.parameters())

    def gradient(value: torch.Tensor) -> torch.Tensor:  # R under mse does not use the output bias
        grads = torch.autograd.grad(value, params, allow_unused=True)
        return torch.cat(
            [(torch.zeros_like(p) if g is None else g).flatten() for g, p in zip(grads, params, strict=True)]
        )

    exact = gradient(explicit_regulariser(net, x, loss=loss, sigma=0.5).sum())
    gen = torch.Generator().manual_seed(12)
    groups = []
    for _ in range(20):  # 20 groups of 1,000 draws: their spread gives the standard error
        value = explicit_regulariser(
            net, x.expand(1000, 3), loss=loss, sigma=0.5, estimator="one_draw", generator=gen
        ).sum()
        groups.append(gradient(value))
    draws = torch.stack(groups)
    se = draws.std(dim=0) / math.sqrt(len(draws))
    z = (draws.mean(dim=0) - exact).abs() / se.clamp_min(1e-12)
    assert z.max() < 4.5, f"largest z-score {z.max():.1f} over {exact.numel()} coordinates"
    assert se.max() < 0.2 * exact.abs().max()  # the check has power


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.05])
@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_noise_gap_matches_regulariser_when_targets_are_the_clean_output(sigma, kind):
    """The paper's central claim: with no residual, E[L(noisy)] − L(clean) ≈ R for small σ."""
    net = _net(3, 32, "tanh", 1, seed=7)
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x)
    r = explicit_regulariser(net, x, loss="mse", sigma=sigma, noise=kind).sum().item()
    gap = noise_gap(
        net,
        x,
        y,
        loss="mse",
        sigma=sigma,
        noise=kind,
        samples=2000,
        generator=torch.Generator().manual_seed(2),
    )
    assert gap.mean / r == pytest.approx(1.0, abs=0.05)
    assert gap.stderr < 0.02 * r


def test_noise_gap_with_residual_matches_full_second_order_term():
    """With real residuals the gap approaches ½ Σ σ² Tr(∂²L/∂h_k²); R is its Gauss–Newton part."""
    from torch.func import hessian, vmap

    net = _net(2, 16, "gelu", 5, seed=9)
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(5))
    sigma = 0.03
    hs = net.clean_activations(x)

    def loss_from(k, h, target):
        out = net.forward_from(k, h.unsqueeze(0))
        return torch.nn.functional.cross_entropy(out, target.unsqueeze(0))

    second_order = 0.0
    for k, h in enumerate(hs):
        hess = vmap(hessian(lambda v, t, k=k: loss_from(k, v, t)))(h.detach(), y)  # (N, d_k, d_k)
        second_order += 0.5 * sigma**2 * torch.diagonal(hess, dim1=1, dim2=2).sum(-1).mean().item()
    r = explicit_regulariser(net, x, loss="cross_entropy", sigma=sigma).sum().item()
    gap = noise_gap(net, x, y, loss="cross_entropy", sigma=sigma, samples=4000)
    assert gap.mean / second_order == pytest.approx(1.0, abs=0.05)
    assert 0.3 < r / second_order < 1.0


def test_cross_entropy_regulariser_has_a_finite_gradient_where_a_probability_underflows():
    # √p with p = 0 has an infinite derivative; √p = exp(½ log p) has none.
    net = _net(1, 4, "tanh", 3, seed=2)
    with torch.no_grad():
        net.layers[1].weight.zero_()
        net.layers[1].bias.copy_(torch.tensor([0.0, 120.0, -800.0], dtype=torch.float64))
    x = torch.randn(5, 3, dtype=torch.float64)
    value = explicit_regulariser(net, x, loss="cross_entropy", sigma=0.3).sum()
    grads = torch.autograd.grad(value, list(net.parameters()))
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(value, reference_regulariser(net, x, loss="cross_entropy", sigma=0.3).sum())
