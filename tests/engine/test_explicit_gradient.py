"""The hand-written explicit-mode gradient against autograd's double backward, in float64."""

from __future__ import annotations

import pytest
import torch

from gni_engine.explicit_gradient import explicit_objective, hand_gradient_applies
from gni_engine.losses import run_losses
from gni_engine.noise import NoiseScales
from gni_engine.regulariser import stacked_regulariser
from gni_engine.spec import RunSpec, parse_run_spec
from gni_engine.stacked import StackedMLP
from gni_engine.training import BatchTrainer, train_batch, train_run

CPU = torch.device("cpu")


def _random_net(dims: list[int], activation: str, bias: bool, runs: int, seed: int) -> StackedMLP:
    g = torch.Generator().manual_seed(seed)
    weights = [
        (torch.randn(runs, a, b, generator=g, dtype=torch.float64) / a**0.5).requires_grad_(True)
        for a, b in zip(dims[:-1], dims[1:], strict=True)
    ]
    biases = (
        [
            (0.1 * torch.randn(runs, 1, b, generator=g, dtype=torch.float64)).requires_grad_(True)
            for b in dims[1:]
        ]
        if bias
        else None
    )
    return StackedMLP(weights, biases, activation)


@pytest.mark.parametrize("hidden", [(), (6,), (5, 4), (7, 3, 6)])
@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("outputs", [1, 3])
def test_hand_gradient_equals_autograd(hidden, activation, bias, outputs):
    runs, n = 3, 9
    dims = [2, *hidden, outputs]
    net = _random_net(dims, activation, bias, runs, seed=len(hidden) + outputs)
    g = torch.Generator().manual_seed(1)
    sigmas = torch.rand(runs, len(net.weights), generator=g, dtype=torch.float64)
    sigmas[0, 0] = 0.0  # a σ of zero at one point of one run
    sigmas[1] = 0.0  # a run with no R at all (a baseline run in an explicit batch)
    scales = NoiseScales.from_sigmas(sigmas.tolist(), ["additive"] * runs, dtype=torch.float64, device=CPU)
    x = torch.randn(runs, n, dims[0], generator=g, dtype=torch.float64)
    y = torch.randn(runs, n, outputs, generator=g, dtype=torch.float64)

    fast = explicit_objective(net, x, y, scales)

    reg = stacked_regulariser(net, x, scales, "mse", method="chain")
    loss = run_losses("mse", net.forward(x).output, y)
    slow = torch.autograd.grad((loss + reg.sum(1)).sum(), net.parameters())
    torch.testing.assert_close(fast.loss, loss.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(fast.regulariser, reg.detach(), rtol=1e-12, atol=1e-300)
    assert len(fast.gradients) == len(slow)
    for mine, reference in zip(fast.gradients, slow, strict=True):
        assert mine.shape == reference.shape
        torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-13)
    assert float(fast.regulariser[2].sum()) > 0  # the check is not vacuous


def test_hand_gradient_covers_only_what_it_is_exact_for():
    net = _random_net([1, 4, 1], "relu", True, 1, seed=0)
    additive = NoiseScales.from_sigmas([[0.1, 0.1]], ["additive"], dtype=torch.float64, device=CPU)
    multiplicative = NoiseScales.from_sigmas(
        [[0.1, 0.1]], ["multiplicative"], dtype=torch.float64, device=CPU
    )
    assert hand_gradient_applies(net, "mse", additive)
    assert not hand_gradient_applies(net, "cross_entropy", additive)  # H_L depends on the output
    assert not hand_gradient_applies(net, "mse", multiplicative)  # R depends on h_k
    assert not hand_gradient_applies(
        _random_net([1, 4, 1], "tanh", True, 1, seed=0), "mse", additive
    )  # φ'' ≠ 0


def _relu_spec(mode: str, seed: int, **training: object) -> RunSpec:
    return parse_run_spec(
        {
            "data": {"name": "sinusoids", "n_points": 40, "frequencies": [1.0, 6.0]},
            "model": {"hidden": [10, 10], "activation": "relu"},
            "noise": {"sigma": 0.1 + 0.05 * seed},
            "training": {"mode": mode, "steps": 30, "lr": 0.01, **training},
            "analyses": {"record_every": 10, "noise_gap_samples": 0},
            "execution": {"precision": "fp64"},
            "seed": seed,
        }
    )


def test_explicit_training_uses_it_and_matches_the_autograd_path():
    """An explicit run alone (hand gradient) trains to the weights of the same run inside a batch
    with GNI runs (a noisy forward pass, so autograd's double backward)."""
    explicit = _relu_spec("explicit", 2)
    assert BatchTrainer([explicit]).hand_gradient
    mixed = [_relu_spec("gni", 0), explicit, _relu_spec("baseline", 1)]
    assert not BatchTrainer(mixed).hand_gradient
    alone = train_run(explicit)
    together = train_batch(mixed)[1]
    for name, value in alone.weights.items():
        torch.testing.assert_close(together.weights[name], value, rtol=0, atol=1e-10)
    assert alone.summary["train_loss"] == pytest.approx(together.summary["train_loss"], rel=1e-9)


def test_hand_gradient_with_sgd_minibatches_and_baseline_runs():
    specs = [
        _relu_spec("explicit", 0, optimizer="sgd", batch_size=16),
        _relu_spec("baseline", 1, optimizer="sgd", batch_size=16),
    ]
    trainer = BatchTrainer(specs)
    assert trainer.hand_gradient
    trainer.hand_gradient = False
    trainer.run()
    reference = [s.weights for s in trainer.states]
    fast = train_batch(specs)
    for state, weights in zip(fast, reference, strict=True):
        for name, value in weights.items():
            torch.testing.assert_close(state.weights[name], value, rtol=0, atol=1e-10)
