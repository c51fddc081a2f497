"""Training: modes, determinism, batch ≡ one-at-a-time, divergence and cancellation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from gni_engine.counter_noise import counter_normals
from gni_engine.data import build_dataset
from gni_engine.errors import DivergenceError, SpecError
from gni_engine.networks import MLP, activation_fn, build_network
from gni_engine.seeding import derive_seed, make_generator
from gni_engine.spec import RunSpec, parse_run_spec
from gni_engine.training import BatchCallbacks, BatchTrainer, train_batch, train_run

TINY: dict[str, Any] = {
    "task": "regression",
    "data": {"name": "sinusoids", "n_points": 48, "frequencies": [1.0, 4.0]},
    "model": {"hidden": [12, 12], "activation": "tanh"},
    "noise": {"sigma": 0.2},
    "training": {"steps": 25, "lr": 0.01},
    "analyses": {"record_every": 5, "noise_gap_samples": 4},
    "execution": {"precision": "fp64"},
}


def spec(**changes: Any) -> RunSpec:
    data = copy.deepcopy(TINY)
    for path, value in changes.items():
        node = data
        *heads, last = path.split("__")
        for h in heads:
            node = node.setdefault(h, {})
        node[last] = value
    return parse_run_spec(data)


def test_same_seed_gives_bit_identical_weights():
    a = train_run(spec(training__mode="gni", execution__precision="fp32"))
    b = train_run(spec(training__mode="gni", execution__precision="fp32"))
    assert a.weights.keys() == b.weights.keys()
    for k in a.weights:
        assert torch.equal(a.weights[k], b.weights[k])
    c = train_run(spec(training__mode="gni", execution__precision="fp32", seed=1))
    assert not torch.equal(a.weights["layers.0.weight"], c.weights["layers.0.weight"])


def test_modes_start_from_identical_initial_weights():
    trainers = [BatchTrainer([spec(training__mode=m)]) for m in ("baseline", "gni", "explicit")]
    first = trainers[0].net.parameters()
    for t in trainers[1:]:
        for p, q in zip(first, t.net.parameters(), strict=True):
            assert torch.equal(p, q)


def test_no_noise_in_evaluation():
    net = MLP(1, (8, 8), 1, sigmas=[0.5, 0.5, 0.5], generator=torch.Generator().manual_seed(0))
    x = torch.linspace(0, 1, 10).unsqueeze(1)
    net.eval()
    clean = net.forward_from(0, x)
    assert torch.equal(net(x), clean) and torch.equal(net(x), clean)
    net.train()
    assert not torch.allclose(net(x), clean)


def test_recorded_losses_are_clean_evaluations():
    state = train_run(spec(training__mode="gni"))
    last = {r.name: r.value for r in state.metrics if r.step == 25}
    net = build_network(state.spec, (1,), 1, dtype=torch.float64)
    net.load_state_dict(state.weights)
    net.eval()
    data = build_dataset(state.spec, dtype=torch.float64)
    with torch.no_grad():
        expected = 0.5 * (net(data.x_train) - data.y_train).pow(2).sum(-1).mean().item()
    assert last["train_loss"] == pytest.approx(expected, rel=1e-12)


def test_invalid_spec_names_the_field():
    with pytest.raises(SpecError) as info:
        parse_run_spec({"model": {"hidden": [4]}, "noise": {"sigma": [0.1, 0.2, 0.3]}})
    assert "noise.sigma" in str(info.value)
    assert info.value.details[0]["loc"] == "noise.sigma"
    with pytest.raises(SpecError, match=r"training\.steps"):
        parse_run_spec({"training": {"steps": 0}})


def _reference_loop(s: RunSpec, stream: str) -> dict[str, torch.Tensor]:
    """One nn.Module, torch.optim.Adam: the plain PyTorch way. Generator noise comes from the module's
    own layers; counter noise is written out here from the stream's definition: each forward pass
    takes, point by point, ⌈n d_k / 4⌉ counters of the run's key (``derive_seed(seed, "noise")``)."""
    data = build_dataset(s, dtype=torch.float64)
    net = build_network(
        s,
        data.input_shape,
        data.n_outputs,
        generator=make_generator(s.seed, "init"),
        noise_generator=make_generator(s.seed, "noise"),
        dtype=torch.float64,
    )
    assert isinstance(net, MLP)
    opt = torch.optim.Adam(net.parameters(), lr=s.training.lr)
    net.train()
    key = torch.tensor([derive_seed(s.seed, "noise")])
    counter = 0
    sigma, multiplicative = s.noise.sigma, s.noise.kind == "multiplicative"
    noisy = s.training.mode == "gni"

    def counter_forward(x: torch.Tensor) -> torch.Tensor:
        nonlocal counter
        h = x
        for k, layer in enumerate(net.layers):
            eps = counter_normals(key, torch.tensor([counter]), h.numel()).double().reshape(h.shape)
            counter += -(-h.numel() // 4)
            if noisy:
                h = h * (1 + sigma * eps) if multiplicative else h + sigma * eps
            h = layer(h)
            if k < len(net.layers) - 1:
                h = activation_fn(s.model.activation)(h)
        return h

    for _ in range(s.training.steps):
        opt.zero_grad()
        out = net(data.x_train) if stream == "generator" else counter_forward(data.x_train)
        loss = 0.5 * (out - data.y_train).pow(2).sum(-1).mean()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("stream", ["generator", "counter-reference"])
@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
@pytest.mark.parametrize("mode", ["baseline", "gni"])
def test_stacked_training_equals_plain_pytorch_loop(mode, kind, stream):
    s = spec(training__mode=mode, noise__kind=kind)
    ours = BatchTrainer([s], noise_stream=stream).run()[0].weights
    reference = _reference_loop(s, stream)
    for k, v in reference.items():
        torch.testing.assert_close(ours[k], v, rtol=0, atol=1e-10)


def test_the_compiled_cpu_noise_trains_what_its_definition_trains():
    """The C kernel's normals differ from the torch definition's by float32 rounding of log, cos and
    sin (≤ 5e-7): 25 steps of training on them end within 1e-7 of the same weights (5e-9 seen)."""
    s = spec(training__mode="gni")
    fast = BatchTrainer([s])
    assert fast.noise_stream == "philox-counter/cpu"  # the CPU default for MLPs
    ours = fast.run()[0].weights
    reference = BatchTrainer([s], noise_stream="counter-reference").run()[0].weights
    assert any(not torch.equal(ours[k], v) for k, v in reference.items())  # two computations
    for k, v in reference.items():
        torch.testing.assert_close(ours[k], v, rtol=0, atol=1e-7)


def _mixed_specs(precision: str) -> list[RunSpec]:
    out = []
    for mode in ("baseline", "gni", "explicit"):
        for kind in ("additive", "multiplicative"):
            for seed, lr in ((0, 0.01), (3, 0.02)):
                out.append(
                    spec(
                        training__mode=mode,
                        noise__kind=kind,
                        seed=seed,
                        training__lr=lr,
                        execution__precision=precision,
                        noise__sigma=0.1 + 0.05 * seed,
                    )
                )
    return out


@pytest.mark.parametrize(("precision", "tol"), [("fp64", 1e-10), ("fp32", 2e-5)])
def test_batch_equals_runs_alone(precision, tol):
    specs = _mixed_specs(precision)
    together = train_batch(specs)
    for s, state in zip(specs, together, strict=True):
        alone = train_run(s)
        for k in alone.weights:
            torch.testing.assert_close(state.weights[k], alone.weights[k], rtol=0, atol=tol)
        for a, b in zip(state.metrics, alone.metrics, strict=True):
            assert (a.step, a.name) == (b.step, b.name)
            assert a.value == pytest.approx(b.value, rel=tol * 10, abs=tol)
        assert state.summary["noise_gap"] == pytest.approx(alone.summary["noise_gap"], rel=tol * 10, abs=tol)


def _assert_same_run(together, alone, tol: float = 1e-10) -> None:
    for k in alone.weights:
        torch.testing.assert_close(together.weights[k], alone.weights[k], rtol=0, atol=tol)
    assert together.summary["noise_gap"] == pytest.approx(alone.summary["noise_gap"], rel=tol * 10, abs=tol)


def test_a_gni_run_draws_its_own_noise_samples_whatever_run_comes_first():
    # noise_samples means nothing to a baseline run; it must not set the batch's M for a gni run.
    first, gni = spec(training__mode="baseline", training__noise_samples=8), spec(training__noise_samples=1)
    assert BatchTrainer([first, gni]).samples == 1
    _assert_same_run(train_batch([first, gni])[1], train_run(gni))


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_an_explicit_one_draw_run_leaves_the_noise_streams_of_the_others_alone(loss, monkeypatch):
    # With per-run generators the one-draw estimator draws from the explicit runs' own streams only.
    monkeypatch.setenv("GNI_NOISE_STREAM", "generator")
    if loss == "mse":
        changes: dict[str, Any] = {}
    else:
        changes = {
            "task": "classification",
            "data": {"name": "two_moons", "n_points": 32},
            "analyses": {"record_every": 5, "noise_gap_samples": 4, "spectrum": False},
        }
    one_draw = {**changes, "training__regulariser": "one_draw"}
    explicit, gni = spec(training__mode="explicit", **one_draw), spec(seed=5, **one_draw)
    together = train_batch([explicit, gni])
    assert together[0].summary["noise_stream"] == together[1].summary["noise_stream"] == "torch-generator"
    _assert_same_run(together[1], train_run(gni))
    _assert_same_run(together[0], train_run(explicit))


def test_classification_batch_equals_alone_with_minibatches():
    base = {
        "task": "classification",
        "data": {"name": "two_moons", "n_points": 64},
        "model": {"hidden": [10], "activation": "elu"},
        "training": {"steps": 12, "batch_size": 16, "optimizer": "sgd", "momentum": 0.9, "lr": 0.1},
        "analyses": {"record_every": 4, "noise_gap_samples": 2},
        "execution": {"precision": "fp64"},
    }
    specs = [
        parse_run_spec({**base, "training": {**base["training"], "mode": m}, "seed": s})
        for m in ("baseline", "gni", "explicit")
        for s in (0, 1)
    ]
    together = train_batch(specs)
    for s, state in zip(specs, together, strict=True):
        alone = train_run(s)
        for k in alone.weights:
            torch.testing.assert_close(state.weights[k], alone.weights[k], rtol=0, atol=1e-10)


def test_explicit_lowers_R_and_gni_explicit_end_close():
    base = {
        "task": "regression",
        "data": {"name": "sinusoids", "n_points": 64, "frequencies": [1.0, 3.0, 12.0], "test_fraction": 0.25},
        "model": {"hidden": [32, 32], "activation": "tanh"},
        "noise": {"sigma": 0.3},
        "training": {"steps": 300, "lr": 0.01},
        "analyses": {"record_every": 100, "noise_gap_samples": 0},
    }
    states = dict(
        zip(
            ("baseline", "gni", "explicit"),
            train_batch(
                [
                    parse_run_spec({**base, "training": {**base["training"], "mode": m}})
                    for m in ("baseline", "gni", "explicit")
                ]
            ),
            strict=True,
        )
    )
    r = {m: s.summary["R_total"] for m, s in states.items()}
    assert r["explicit"] < 0.5 * r["baseline"]
    test = {m: s.summary["test_loss"] for m, s in states.items()}
    assert abs(test["gni"] - test["explicit"]) < abs(test["gni"] - test["baseline"])
    assert abs(test["gni"] - test["explicit"]) < abs(test["explicit"] - test["baseline"])


def test_divergence_fails_one_run_and_spares_the_others():
    bad = spec(training__lr=10.0, training__optimizer="sgd", training__steps=200, noise__sigma=0.0)
    good = spec(training__lr=0.01, training__optimizer="sgd", training__steps=200, seed=1)
    with pytest.raises(DivergenceError) as info:
        train_run(bad)
    assert info.value.step >= 1
    assert f"step {info.value.step}" in str(info.value)
    states = train_batch([bad, good])
    assert states[0].status == "failed" and states[0].failed_step == info.value.step
    assert states[1].status == "succeeded"
    torch.testing.assert_close(
        states[1].weights["layers.0.weight"], train_run(good).weights["layers.0.weight"]
    )


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_diverged_run_keeps_the_weights_of_its_last_finite_step(momentum: float) -> None:
    sgd = {"training__optimizer": "sgd", "training__momentum": momentum, "training__steps": 200}
    bad = spec(training__lr=10.0, noise__sigma=0.0, **sgd)
    good = spec(training__lr=0.01, seed=1, **sgd)
    failed = train_batch([bad, good])[0]
    assert failed.status == "failed" and failed.failed_step is not None
    before = BatchTrainer([bad, good])
    while before.step < failed.failed_step - 1:
        before.train_step()
    for k, w in before.net.unstack(0).items():
        assert torch.equal(failed.weights[k], w), k


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_deferred_divergence_checks_name_the_same_step_and_keep_the_last_finite_weights(momentum: float):
    """On a GPU the host reads the divergence flags every few steps (no stall per step); forced here
    (and no records in between, which would read them too). SGD masks by the flags on the device, so
    the failed run ends exactly where reading them every step leaves it, momentum or not."""
    sgd = {"training__optimizer": "sgd", "training__momentum": momentum, "analyses__record_every": 200}
    bad = spec(training__lr=10.0, training__steps=200, noise__sigma=0.0, **sgd)
    good = spec(training__lr=0.01, training__steps=200, seed=1, **sgd)
    every_step = train_batch([bad, good])
    deferred = BatchTrainer([bad, good])
    deferred.settle_every = 16
    states = deferred.run()
    assert states[0].status == "failed" and states[0].failed_step == every_step[0].failed_step
    assert states[0].failed_step % 16 != 0  # the host looked only later
    assert states[0].error == every_step[0].error
    torch.testing.assert_close(states[0].weights, every_step[0].weights, rtol=0, atol=0)
    assert states[1].status == "succeeded"
    torch.testing.assert_close(states[1].weights, every_step[1].weights, rtol=0, atol=0)


def test_deferred_checks_report_a_diverged_run_as_failed_even_when_cancelled_later():
    asked: list[tuple[int, int]] = []

    class CancelFirst(BatchCallbacks):
        def should_cancel(self, index: int) -> bool:
            asked.append((index, trainer.step))
            return index == 0 and trainer.step >= 80

    bad = spec(training__lr=10.0, training__optimizer="sgd", training__steps=200, noise__sigma=0.0)
    good = spec(seed=1, training__steps=200, training__optimizer="sgd")
    trainer = BatchTrainer([bad, good], callbacks=CancelFirst())
    trainer.settle_every = 30  # flags read at steps 30, 60, 90, …
    for _ in range(80):  # the bad run diverges at step 76; the host has not looked yet
        trainer.train_step()
    assert [s.status for s in trainer.states] == ["running", "running"]
    states = trainer.run()
    assert states[0].status == "failed" and states[0].failed_step == 76
    assert states[1].status == "succeeded"
    # a diverged run is not even asked (an executor's should_cancel may record a cancellation)
    assert [step for index, step in asked if index == 0] == []
    assert [step for index, step in asked if index == 1] == [90, 120, 150, 180]


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_backward_passes_run_in_the_runs_matmul_precision(precision: str) -> None:
    """TF32 for tf32 runs' gradients too (not only the forward); never for fp32, whatever the default."""
    seen: list[bool] = []
    trainer = BatchTrainer([spec(execution__precision=precision)])
    trainer.net.parameters()[0].register_hook(
        lambda g: seen.append(torch.backends.cuda.matmul.allow_tf32) or g
    )
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "fp32"  # the opposite, as a process default
    try:
        trainer.train_step()
        recorded: list[bool] = []
        trainer.recorders.append(_FlagRecorder(recorded))
        trainer.record()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert seen == [precision == "tf32"]
    assert recorded == [False]  # analyses in full precision


class _FlagRecorder:
    def __init__(self, seen: list[bool]) -> None:
        self.seen = seen

    def record(self, ctx: Any) -> list[list[Any]]:
        self.seen.append(torch.backends.cuda.matmul.allow_tf32)
        return [[] for _ in ctx.specs]

    def summarise(self, ctx: Any) -> list[dict[str, Any]]:
        return [{} for _ in ctx.specs]


def test_cancellation_between_steps():
    class CancelSecond(BatchCallbacks):
        def should_cancel(self, index: int) -> bool:
            return index == 1

    states = train_batch([spec(), spec(seed=2)], callbacks=CancelSecond())
    assert [s.status for s in states] == ["succeeded", "cancelled"]
    assert [s.summary["steps_done"] for s in states] == [25, states[1].metrics[-1].step]
    assert states[1].summary["steps_done"] < 25  # where it stopped, not the steps it was given


def test_zeroing_failed_runs_gradients_in_place_equals_the_out_of_place_mask():
    """The deferred-settle step zeroes the gradients of runs flagged on the device in place on a dense
    tensor; the result is the out-of-place mask's, for a transposed (bmm-like) gradient and a dense one."""
    from gni_engine.training import _zero_runs

    transposed = torch.randn(3, 4, 5).transpose(1, 2)
    transposed[1] = float("nan")
    failed = torch.tensor([False, True, False])
    expected = transposed.masked_fill(failed.reshape(-1, 1, 1), 0.0)
    out = _zero_runs(transposed, failed)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    dense = torch.randn(3, 6)
    dense[2] = float("inf")
    before = dense.clone()
    out = _zero_runs(dense, torch.tensor([False, False, True]))
    assert out.data_ptr() == dense.data_ptr()  # in place: no copy of a dense gradient
    assert bool((out[2] == 0).all()) and torch.equal(out[:2], before[:2])


def test_the_adam_kernel_is_chosen_on_cuda_only_and_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` keeps PyTorch's fused Adam off CUDA; asking for the Triton kernel where it cannot run
    (no interpreter on the CPU, an SGD batch) is an error that names why; a bad GNI_ADAM_KERNEL too."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("GNI_ADAM_KERNEL", raising=False)
    assert BatchTrainer([spec()]).optimiser.kernel_label == "torch-fused-adam"
    assert train_run(spec(training__steps=2)).summary["optimiser_kernel"] == "torch-fused-adam"
    with pytest.raises(ValueError, match=r"adam_kernel: the Triton Adam kernel .* cannot run on cpu"):
        BatchTrainer([spec()], adam_kernel="triton")
    with pytest.raises(ValueError, match="the runs' optimiser is sgd"):
        BatchTrainer([spec(training__optimizer="sgd")], adam_kernel="triton")
    assert BatchTrainer([spec(training__optimizer="sgd")]).optimiser.kernel_label == "torch-sgd"
    monkeypatch.setenv("GNI_ADAM_KERNEL", "fast")
    with pytest.raises(
        ValueError, match="GNI_ADAM_KERNEL: expected one of 'auto', 'torch', 'triton', got 'fast'"
    ):
        BatchTrainer([spec()])


def test_with_an_adam_kernel_that_skips_failed_runs_a_deferred_check_keeps_their_last_finite_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU the host reads the divergence flags every few steps. PyTorch's fused Adam then keeps
    moving a diverged run along its momentum until the host looks; the Triton kernel (its float64
    twin here, standing in on the CPU) reads the flags on the device and leaves the run exactly as
    at its last finite step, and no pass zeroes its gradients."""
    from gni_engine import kernel_choice, training
    from tests.engine.test_optim import adam_twin

    monkeypatch.setattr(kernel_choice, "_probe_adam", lambda device_type: adam_twin)
    zeroed: list[int] = []
    real_zero_runs = training._zero_runs
    monkeypatch.setattr(training, "_zero_runs", lambda g, f: zeroed.append(1) or real_zero_runs(g, f))
    runs = [spec(training__steps=40, analyses__record_every=40, seed=seed) for seed in (0, 1)]

    def deferred(adam_kernel: str, poison: bool) -> tuple[list[Any], dict[str, torch.Tensor]]:
        """Run 0's output bias made huge after step 5: its loss is infinite from step 6 on."""
        trainer = BatchTrainer(runs, adam_kernel=adam_kernel)
        trainer.settle_every = 16
        for _ in range(5):
            trainer.train_step()
        if poison:
            with torch.no_grad():
                trainer.net.parameters()[-1][0].fill_(1e300)
        last_finite = trainer.net.unstack(0)
        return trainer.run(), last_finite

    clean, _ = deferred("torch", poison=False)
    zeroed.clear()
    with_kernel, last_finite = deferred("triton", poison=True)
    assert with_kernel[0].status == "failed" and with_kernel[0].failed_step == 6
    assert with_kernel[0].summary["optimiser_kernel"] == "triton-adam"
    for k, w in last_finite.items():
        assert torch.equal(with_kernel[0].weights[k], w), k
    torch.testing.assert_close(with_kernel[1].weights, clean[1].weights, rtol=0, atol=1e-12)
    assert zeroed == []
    fused, last_finite = deferred("torch", poison=True)  # drifts along its momentum until step 16
    assert fused[0].failed_step == 6 and zeroed
    assert any(not torch.equal(fused[0].weights[k], w) for k, w in last_finite.items())
    assert all(bool(torch.isfinite(w).all()) for w in fused[0].weights.values())
    torch.testing.assert_close(fused[1].weights, clean[1].weights, rtol=0, atol=0)
