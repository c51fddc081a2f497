"""Counter-based noise (the training noise of MLPs), checked on the CPU through its torch definition.

The compiled CPU kernel is compared with the definition here (``test_counter_noise_cpu.py``); the
Triton kernels under Triton's interpreter and, on a GPU, by ``benchmarks/gpu_checks.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from gni_engine.checkpoint import load_checkpoint, restore, run_checkpoint, save_checkpoint
from gni_engine.counter_noise import counter_normals, inject_reference, noise_trig, philox4x32
from gni_engine.spec import RunSpec, parse_run_spec
from gni_engine.training import BatchTrainer


@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [  # Random123's known-answer vectors for philox4x32-10
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        (
            [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
            [0xA4093822, 0x299F31D0],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
        ),
    ],
)
def test_philox_matches_the_known_answers(counter: list[int], key: list[int], expected: list[int]) -> None:
    words = philox4x32(*(torch.tensor([v], dtype=torch.int64) for v in counter + key))
    assert [int(w) for w in words] == expected


def test_normals_have_mean_zero_and_unit_variance_and_runs_do_not_correlate() -> None:
    keys = torch.tensor([11, 2**62 + 5], dtype=torch.int64)
    z = counter_normals(keys, torch.tensor([0, 2**33], dtype=torch.int64), 200_000).double()
    n = z.shape[1]
    assert z.mean(1).abs().max() < 5 / math.sqrt(n)
    assert (z.var(1) - 1).abs().max() < 5 * math.sqrt(2 / n)
    assert abs(float((z[0] * z[1]).mean())) < 5 / math.sqrt(n)
    kurtosis = (z**4).mean(1)  # 3 for a Gaussian; sd ≈ √(96/n)
    assert (kurtosis - 3).abs().max() < 5 * math.sqrt(96 / n)


def test_a_stream_is_a_function_of_its_key_and_counter_alone() -> None:
    keys = torch.tensor([7, 8, 9], dtype=torch.int64)
    starts = torch.tensor([0, 5, 2**40], dtype=torch.int64)
    together = counter_normals(keys, starts, 37)
    for e in range(3):
        assert torch.equal(together[e], counter_normals(keys[e : e + 1], starts[e : e + 1], 37)[0])
    later = counter_normals(keys, starts + 1, 33)  # one counter on = four values on
    assert torch.equal(later, together[:, 4:37])


def test_injection_forms_and_antithetic_replay() -> None:
    h = torch.randn(2, 3, 5, dtype=torch.float64)
    keys, starts = torch.tensor([1, 2]), torch.tensor([3, 4])
    eps = counter_normals(keys, starts, 15).double().reshape(2, 3, 5)
    sigma = torch.tensor([0.1, 0.3], dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    add = inject_reference(h, sigma, zero, keys, starts)
    torch.testing.assert_close(add, h + eps * sigma.reshape(2, 1, 1), rtol=0, atol=0)
    mult = inject_reference(h, zero, sigma, keys, starts)
    torch.testing.assert_close(mult, h * (1 + sigma.reshape(2, 1, 1) * eps), rtol=1e-15, atol=1e-15)
    flipped = inject_reference(h, sigma, zero, keys, starts, sign=-1.0)
    torch.testing.assert_close(add + flipped, 2 * h, rtol=1e-15, atol=1e-15)


BASE: dict[str, Any] = {
    "data": {"name": "sinusoids", "n_points": 40, "frequencies": [1.0, 3.0]},
    "model": {"hidden": [10, 10], "activation": "tanh"},
    "noise": {"sigma": 0.2},
    "training": {"steps": 20, "lr": 0.01},
    "analyses": {"record_every": 5, "noise_gap_samples": 2},
    "execution": {"precision": "fp64"},
}


def _spec(mode: str, kind: str, seed: int, **training: Any) -> RunSpec:
    return parse_run_spec(
        {
            **BASE,
            "noise": {"sigma": 0.2, "kind": kind},
            "training": {**BASE["training"], "mode": mode, **training},
            "seed": seed,
        }
    )


def test_a_run_with_counter_noise_gives_the_same_result_alone_and_in_a_batch() -> None:
    specs = [
        _spec("gni", "additive", 0),
        _spec("gni", "multiplicative", 1),
        _spec("baseline", "additive", 2),
        _spec("explicit", "multiplicative", 3),
    ]
    for stream, label in (("counter", "philox-counter/cpu"), ("counter-reference", "philox-counter")):
        together = BatchTrainer(specs, noise_stream=stream).run()
        for s, state in zip(specs, together, strict=True):
            alone = BatchTrainer([s], noise_stream=stream).run()[0]
            assert state.summary["noise_stream"] == label
            for k, w in alone.weights.items():
                torch.testing.assert_close(state.weights[k], w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("activation", "bias"), [("relu", True), ("linear", False)])
def test_the_fused_activation_path_trains_what_the_unfused_path_trains(activation: str, bias: bool) -> None:
    """Hidden layers as bmm + (bias, activation, noise in one step) — the GPU kernel's path, here
    with its torch definition — give the weights of baddbmm, activation, then injection."""
    model = {"hidden": [10, 10], "activation": activation, "bias": bias}
    specs = [
        parse_run_spec({**_spec(mode, kind, seed).model_dump(mode="json"), "model": model})
        for mode, kind, seed in [
            ("gni", "additive", 0),
            ("gni", "multiplicative", 1),
            ("baseline", "additive", 2),
        ]
    ]
    fused = BatchTrainer(specs, noise_stream="counter-reference")
    plain = BatchTrainer(specs, noise_stream="counter-reference")
    assert fused.fuse_activation
    plain.fuse_activation = False
    for a, b in zip(fused.run(), plain.run(), strict=True):
        assert a.summary["train_loss"] != 0.0
        for k, w in b.weights.items():
            torch.testing.assert_close(a.weights[k], w, rtol=1e-10, atol=1e-12)
    alone = BatchTrainer(specs[1:2], noise_stream="counter-reference").run()[0]
    for k, w in alone.weights.items():
        torch.testing.assert_close(fused.states[1].weights[k], w, rtol=1e-10, atol=1e-12)
    tanh = BatchTrainer([_spec("gni", "additive", 0)], noise_stream="counter-reference")
    assert not tanh.fuse_activation


def test_counter_noise_trains_like_generator_noise_in_distribution() -> None:
    """Different random numbers, the same law: final training losses of many seeds agree in the mean."""
    specs = [_spec("gni", "additive", seed, steps=60) for seed in range(24)]
    counter = [s.summary["train_loss"] for s in BatchTrainer(specs, noise_stream="counter").run()]
    generator = [s.summary["train_loss"] for s in BatchTrainer(specs, noise_stream="generator").run()]
    assert counter != generator
    c, g = torch.tensor(counter), torch.tensor(generator)
    spread = math.sqrt(float(c.var() + g.var()) / len(specs))
    assert abs(float(c.mean() - g.mean())) < 4 * spread


def test_noise_samples_average_distinct_draws() -> None:
    one = BatchTrainer([_spec("gni", "additive", 0, noise_samples=1)], noise_stream="counter").run()[0]
    two = BatchTrainer([_spec("gni", "additive", 0, noise_samples=2)], noise_stream="counter").run()[0]
    assert not torch.equal(one.weights["layers.0.weight"], two.weights["layers.0.weight"])


def test_resume_with_counter_noise_is_bit_identical(tmp_path: Any) -> None:
    specs = [_spec("gni", "additive", 0), _spec("gni", "multiplicative", 1)]
    uninterrupted = BatchTrainer(specs, noise_stream="counter").run()
    first = BatchTrainer(specs, noise_stream="counter")
    while first.step < 7:
        first.train_step()
    paths = []
    for e in range(len(specs)):
        paths.append(tmp_path / f"run{e}.safetensors")
        save_checkpoint(run_checkpoint(first, e), paths[-1])
    resumed = BatchTrainer(specs, noise_stream="counter")
    restore(resumed, [load_checkpoint(p) for p in paths])
    for a, b in zip(uninterrupted, resumed.run(), strict=True):
        for k in a.weights:
            assert torch.equal(a.weights[k], b.weights[k])
    with pytest.raises(ValueError, match="no noise counter"):
        restore(
            BatchTrainer(specs, noise_stream="counter"),
            [{**load_checkpoint(p), "noise_counter": None} for p in paths],
        )


def test_noise_stream_choices_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _spec("gni", "additive", 0)
    assert BatchTrainer([s]).noise_stream == "philox-counter/cpu"  # the CPU default for MLPs
    assert BatchTrainer([s], noise_stream="generator").noise_stream == "torch-generator"
    with pytest.raises(ValueError, match="noise_stream: expected one of 'auto', 'generator'"):
        BatchTrainer([s], noise_stream="philox")
    monkeypatch.setenv("GNI_NOISE_STREAM", "fast")
    with pytest.raises(ValueError, match="GNI_NOISE_STREAM: expected"):
        BatchTrainer([s])
    monkeypatch.setenv("GNI_NOISE_STREAM", "counter-reference")
    assert BatchTrainer([s]).noise_stream == "philox-counter"
    monkeypatch.setenv("GNI_NOISE_STREAM", "generator")
    assert BatchTrainer([s]).noise_stream == "torch-generator"
    monkeypatch.delenv("GNI_NOISE_STREAM")
    bf16 = parse_run_spec({**BASE, "execution": {"precision": "bf16"}})
    assert BatchTrainer([bf16]).noise_stream == "torch-generator"  # counters need fp32 or fp64
    with pytest.raises(ValueError, match="needs an MLP and a precision other than bf16"):
        BatchTrainer([bf16], noise_stream="counter")
    monkeypatch.setenv("GNI_NOISE_TRIG", "fast")  # a typo is named, not a quietly failed GPU probe
    with pytest.raises(ValueError, match="GNI_NOISE_TRIG: expected one of 'libdevice', 'shared', got 'fast'"):
        BatchTrainer([s])
    monkeypatch.setenv("GNI_NOISE_TRIG", "libdevice")  # the GPU kernels' trig: the CPU's stream as it was
    assert BatchTrainer([s]).noise_stream == "philox-counter/cpu"
    monkeypatch.delenv("GNI_NOISE_TRIG")
    assert noise_trig() == "shared"  # the default since an H100 timed both (docs/performance.md)


def test_an_unusable_gpu_kernel_falls_back_to_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from gni_engine import counter_noise

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "gni_engine.counter_noise_triton", None)  # import fails
    counter_noise._probe_triton.cache_clear()
    try:
        assert counter_noise.gpu_kernels() is None
    finally:
        counter_noise._probe_triton.cache_clear()


def test_a_checkpoint_resumes_only_where_its_noise_streams_can_continue() -> None:
    from gni_engine.execution import resumable

    specs = [_spec("gni", "additive", 0)]
    written = BatchTrainer(specs, noise_stream="generator")
    written.train_step()
    checkpoint = run_checkpoint(written, 0)
    assert checkpoint["noise"] == ["cpu", "torch-generator"]
    assert resumable([checkpoint], specs, ("cpu", "torch-generator"))
    assert not resumable([checkpoint], specs, ("cpu", "philox-counter"))
    assert not resumable([checkpoint], specs, ("cuda", "torch-generator"))
    older = {k: v for k, v in checkpoint.items() if k != "noise"}  # written before the field existed
    assert resumable([older], specs, ("cpu", "torch-generator"))
    assert not resumable([older], specs, ("cuda", "philox-counter/triton"))
    # a GPU checkpoint drawn with libdevice's trig does not continue under the shared reduction's
    gpu = {**checkpoint, "noise": ["cuda", "philox-counter/triton"]}
    assert resumable([gpu], specs, ("cuda", "philox-counter/triton"))
    assert not resumable([gpu], specs, ("cuda", "philox-counter/triton+shared-trig"))


def test_the_resume_step_is_the_latest_one_usable_by_every_run() -> None:
    from gni_engine.execution import latest_common

    specs = [_spec("gni", "additive", 0), _spec("gni", "additive", 1)]
    trainer = BatchTrainer(specs, noise_stream="generator")
    for _ in range(3):
        trainer.train_step()
    usable = [run_checkpoint(trainer, e) for e in range(2)]  # step 3, cpu generators
    # a later step left by an attempt on a GPU (counter noise): not usable here
    stale = [{**c, "step": 5, "noise": ["cuda", "philox-counter/triton"]} for c in usable]
    chosen = latest_common([[stale[0], usable[0]], [stale[1], usable[1]]], specs, ("cpu", "torch-generator"))
    assert [c and c["step"] for c in chosen] == [3, 3]
    on_gpu = latest_common(
        [[stale[0], usable[0]], [stale[1], usable[1]]], specs, ("cuda", "philox-counter/triton")
    )
    assert [c and c["step"] for c in on_gpu] == [5, 5]


def test_the_fused_gemm_is_refused_by_name_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU without Triton's interpreter the fused GEMM cannot run: asking for it is an error that
    says so, never a silent fallback; a malformed GNI_FUSED_GEMM is named too."""
    relu = parse_run_spec({**BASE, "model": {"hidden": [8, 8], "activation": "relu"}})
    relu32 = parse_run_spec({**relu.model_dump(), "execution": {"precision": "fp32"}})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="fused_gemm: the fused-GEMM kernel cannot run on cpu"):
        BatchTrainer([relu32], noise_stream="counter", fused_gemm="on")
    monkeypatch.setenv("GNI_FUSED_GEMM", "yes")
    with pytest.raises(
        ValueError, match="GNI_FUSED_GEMM: expected one of 'auto', 'off', 'on', 'tf32x3', 'fold', got 'yes'"
    ):
        BatchTrainer([relu], noise_stream="counter")
    monkeypatch.setenv("GNI_FUSED_GEMM", "off")
    trainer = BatchTrainer([relu], noise_stream="counter")
    assert trainer.hidden_layer_kernel == "gemm+fused-activation"
    assert BatchTrainer([relu], noise_stream="generator").hidden_layer_kernel == "eager"
    odd = parse_run_spec(
        {**BASE, "model": {"hidden": [8, 6], "activation": "relu"}, "execution": {"precision": "fp32"}}
    )
    with pytest.raises(ValueError, match=r"this batch is fp32 with hidden widths \[8, 6\]"):
        BatchTrainer([odd], noise_stream="counter", fused_gemm="on")
    with pytest.raises(ValueError, match=r"this batch is fp64 with hidden widths \[8, 8\]"):
        BatchTrainer([relu], noise_stream="counter", fused_gemm="on")
    tanh = parse_run_spec({**BASE, "execution": {"precision": "fp32"}})
    with pytest.raises(ValueError, match=r"relu or linear activations .* this batch is a mlp \(tanh\)"):
        BatchTrainer([tanh], noise_stream="counter", fused_gemm="on")


def test_the_folded_kernels_are_refused_by_name_where_they_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``fused_gemm="fold"``: Triton kernels too, so on a CPU without the interpreter it is an error
    that says so; widths that split a counter's four values across rows, and bf16, are named."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    relu = parse_run_spec({**BASE, "model": {"hidden": [8, 8], "activation": "relu"}})
    with pytest.raises(ValueError, match="fused_gemm: the folded activation kernels cannot run on cpu"):
        BatchTrainer([relu], noise_stream="counter", fused_gemm="fold")
    odd = parse_run_spec({**BASE, "model": {"hidden": [8, 6], "activation": "relu"}})
    with pytest.raises(ValueError, match=r"multiples of 4; this batch is fp64 with hidden widths \[8, 6\]"):
        BatchTrainer([odd], noise_stream="counter", fused_gemm="fold")
    tanh = parse_run_spec(BASE)
    with pytest.raises(ValueError, match=r"folded activation kernels compute the hidden layers of MLPs"):
        BatchTrainer([tanh], noise_stream="counter", fused_gemm="fold")


def test_the_default_folds_only_where_the_folded_kernels_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` (the default, and GNI_FUSED_GEMM unset) picks the folded kernels for a CUDA batch they
    compute and quietly keeps cuBLAS + the fused activation kernel elsewhere: on the CPU (even where
    the interpreter could run them), for odd widths, tanh and generator noise."""
    monkeypatch.delenv("GNI_FUSED_GEMM", raising=False)
    relu = parse_run_spec({**BASE, "model": {"hidden": [8, 8], "activation": "relu"}})
    assert BatchTrainer([relu], noise_stream="counter").hidden_layer_kernel == "gemm+fused-activation"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert BatchTrainer([relu], noise_stream="counter").hidden_layer_kernel == "gemm+fused-activation"
    odd = parse_run_spec({**BASE, "model": {"hidden": [8, 6], "activation": "relu"}})
    tanh = parse_run_spec(BASE)
    for spec, kernel in ((odd, "gemm+fused-activation"), (tanh, "eager")):
        assert BatchTrainer([spec], noise_stream="counter", fused_gemm="auto").hidden_layer_kernel == kernel
    assert BatchTrainer([relu], noise_stream="generator").hidden_layer_kernel == "eager"

    from gni_engine import kernel_choice

    probed: list[str] = []

    def probe(device: torch.device) -> str:
        probed.append(device.type)
        return "the folded kernels"

    monkeypatch.setattr(kernel_choice, "folded_kernel", probe)
    trainer = BatchTrainer([relu], noise_stream="counter")
    choose = kernel_choice.choose_fused_linear
    assert choose(trainer, "auto") == (None, "fp64") and probed == []  # a CPU batch: not even probed
    trainer.device = torch.device("cuda")  # what the choice reads; nothing runs
    assert choose(trainer, "auto") == ("the folded kernels", "fp64") and probed == ["cuda"]
    trainer.net.weights[0] = trainer.net.weights[0][..., :6]
    assert choose(trainer, "auto") == (None, "fp64")  # a width the kernels do not take: quietly off
    monkeypatch.setattr(kernel_choice, "folded_kernel", lambda device: None)  # the start-up check failed
    trainer.net.weights[0] = trainer.net.weights[0][..., :4]
    assert choose(trainer, "auto") == (None, "fp64")


def test_a_finished_forward_pass_equals_the_layer_by_layer_one() -> None:
    """``StackedMLP.forward``'s ``finish`` (the folded kernels' last hidden layer and output layer at
    once; here their torch definition) gives the output of the layer-by-layer pass with the same
    noise; a ``finish`` that declines (``None``) leaves the pass as it was."""
    from gni_engine.counter_noise import (
        REFERENCE_KERNELS,
        CounterNoiseSampler,
        CounterStreams,
        FusedLinear,
        reference_activator,
    )
    from gni_engine.noise import NoisePlan, NoiseScales
    from gni_engine.stacked import StackedMLP

    generator = torch.Generator().manual_seed(5)
    sizes = [1, 12, 8, 1]
    weights = [
        torch.randn(3, a, b, dtype=torch.float64, generator=generator)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    biases = [torch.randn(3, 1, b, dtype=torch.float64, generator=generator) for b in sizes[1:]]
    net = StackedMLP(weights, biases, "relu")
    x = torch.randn(3, 20, 1, dtype=torch.float64, generator=generator)
    sigmas = [[0.1, 0.2, 0.3], [0.0, 0.1, 0.2], [0.3, 0.0, 0.1]]
    scales = NoiseScales.from_sigmas(
        sigmas, ["additive", "multiplicative", "additive"], dtype=torch.float64, device=torch.device("cpu")
    )
    plan = NoisePlan(scales, net.point_sizes())
    calls: list[int] = []

    def last_layer(h, w, bias, activation, w_out, b_out, *noise_and_flags):  # type: ignore[no-untyped-def]
        calls.append(int(h.shape[2]))
        hidden = reference_activator(torch.bmm(h, w), bias, activation, *noise_and_flags)
        return torch.baddbmm(b_out, hidden, w_out)

    def sampler(finish: Any) -> CounterNoiseSampler:
        linear = FusedLinear(lambda h, w, a: False, lambda *a: None, "test", finish)  # type: ignore[arg-type,return-value]
        streams = CounterStreams([11, 12, 13], torch.device("cpu"))
        return CounterNoiseSampler(plan, streams, 20, REFERENCE_KERNELS, linear=linear)

    plain = sampler(None)
    assert plain.finish() is None
    expected = net.forward(x, plain.perturb(), plain.activate())
    folded = sampler(last_layer)
    got = net.forward(x, folded.perturb(), folded.activate(), folded.finish())
    assert calls == [12]  # the last hidden layer's input width
    torch.testing.assert_close(got.output, expected.output, rtol=1e-12, atol=1e-12)
    assert len(got.inputs) == len(expected.inputs) - 1  # the last hidden value never materialised
    declined = sampler(lambda *args: None)
    again = net.forward(x, declined.perturb(), declined.activate(), declined.finish())
    torch.testing.assert_close(again.output, expected.output, rtol=0, atol=0)
    assert len(again.inputs) == len(expected.inputs)
