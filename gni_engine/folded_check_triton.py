"""The folded kernels (:mod:`gni_engine.folded_activation_triton`) against their definition.

What a card's start-up probe runs before a batch uses the folded kernels (through
:func:`gni_engine.counter_noise._layer_module`), what ``benchmarks/gpu_checks.py`` runs in full, and
what the tests run under Triton's CPU interpreter: each kernel's output and gradients against the
float64 ``bmm`` + :func:`gni_engine.counter_noise.reference_activator` definition, relative to the
reference's largest value, and whether a NaN reaches the output.
"""

from __future__ import annotations

import torch

from gni_engine.folded_activation_triton import folded_activate_gpu, folded_last_gpu


def compare_last_with_reference(
    device: str | torch.device = "cuda", *, every_variant: bool = True
) -> dict[str, float]:
    """Largest differences between the folded last layer (:func:`folded_last_gpu`) and its
    definition — ``bmm``, :func:`gni_engine.counter_noise.reference_activator`, then the output
    layer's ``baddbmm``, in float64 on the CPU — relative to the reference's largest value: the
    output and the gradients of h, W, b, w_out and b_out, in fp64 and fp32, every variant of the
    hidden layer with an output bias and the trained one without (``every_variant=False``: the
    variants a ReLU network trains with). ``nan_kept`` is 1 where a NaN in h did not reach the
    output."""
    from gni_engine.counter_noise import (
        EVERY_VARIANT,
        TRAINED_VARIANTS,
        check_noise,
        check_streams,
        reference_activator,
    )

    keys, starts = check_streams()
    generator = torch.Generator().manual_seed(3)
    h = torch.randn(3, 37, 20, dtype=torch.float64, generator=generator)
    w = torch.randn(3, 20, 24, dtype=torch.float64, generator=generator) / 20**0.5
    bias = torch.randn(3, 1, 24, dtype=torch.float64, generator=generator)
    w_out = torch.randn(3, 24, 1, dtype=torch.float64, generator=generator) / 24**0.5
    b_out = torch.randn(3, 1, 1, dtype=torch.float64, generator=generator)
    g = torch.randn(3, 37, 1, dtype=torch.float64, generator=generator)
    # (hidden layer variant, output bias): every variant with one, the trained one without
    variants = [(*v, True) for v in (EVERY_VARIANT if every_variant else TRAINED_VARIANTS)]
    if every_variant:
        variants.append((True, "relu", True, False, False))
    out: dict[str, float] = {}
    for dtype in (torch.float64, torch.float32):
        for has_bias, activation, noise, multiplicative, out_bias in variants:
            a, m, settings = check_noise(multiplicative, noise)
            leaves = {"h": h, "w": w, "w_out": w_out}
            if has_bias:
                leaves["b"] = bias
            if out_bias:
                leaves["b_out"] = b_out
            ref_leaves = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
            hidden = reference_activator(
                torch.bmm(ref_leaves["h"], ref_leaves["w"]),
                ref_leaves.get("b"),
                activation,
                a,
                m,
                keys,
                starts,
                *settings,
            )
            ref = torch.bmm(hidden, ref_leaves["w_out"])
            ref = ref + ref_leaves["b_out"] if out_bias else ref
            ref_grads = torch.autograd.grad(ref, list(ref_leaves.values()), g)
            mine = {k: v.detach().to(device, dtype).requires_grad_(True) for k, v in leaves.items()}
            got = folded_last_gpu(
                mine["h"],
                mine["w"],
                mine.get("b"),
                activation,
                mine["w_out"],
                mine.get("b_out"),
                a.to(device, dtype),
                m.to(device, dtype),
                keys.to(device),
                starts.to(device),
                *settings,
            )
            assert got is not None
            got_grads = torch.autograd.grad(got, list(mine.values()), g.to(device, dtype))
            name = (
                f"last_{str(dtype).removeprefix('torch.')}_{activation}{'_bias' if has_bias else ''}"
                f"{'_noise' if noise else ''}{'_mult' if multiplicative else ''}"
                f"{'' if out_bias else '_no_out_bias'}"
            )
            labels = ["out", *(f"grad_{k}" for k in leaves)]
            for label, theirs, mine_value in zip(labels, (ref, *ref_grads), (got, *got_grads), strict=True):
                scale = float(theirs.detach().abs().max()) or 1.0
                out[f"{name}_{label}"] = (
                    float((mine_value.detach().cpu().double() - theirs.detach()).abs().max()) / scale
                )
    zero = torch.zeros(1, device=device)
    nan_h = torch.zeros(1, 2, 4, device=device)
    nan_h[0, 1, 3] = float("nan")
    ones = torch.ones(1, 4, 4, device=device)
    kept = folded_last_gpu(
        nan_h, ones, None, "relu", torch.ones(1, 4, 1, device=device), None, zero, zero,
        keys[:1].to(device), starts[:1].to(device), 0, 1.0, False, False,
    )  # fmt: skip
    out["nan_kept"] = 0.0 if kept is not None and bool(torch.isnan(kept[0, 1]).all()) else 1.0
    return out


def compare_folded_with_reference(
    device: str | torch.device = "cuda", *, every_variant: bool = True
) -> dict[str, float]:
    """Largest differences between the folded kernels and their definition
    (:func:`gni_engine.counter_noise.compare_layer_with_reference`), in float64 and float32, every
    variant for one-input and 20-input layers (``every_variant=False``: the variants a ReLU network's
    training compiles)."""
    from gni_engine.counter_noise import compare_layer_with_reference

    out: dict[str, float] = {}
    for dtype in (torch.float64, torch.float32):
        found = compare_layer_with_reference(
            folded_activate_gpu,
            device,
            every_variant=every_variant,
            every_first_layer=True,
            dtype=dtype,
            label=f"folded_{str(dtype).removeprefix('torch.')}",
        )
        out["nan_kept"] = max(out.get("nan_kept", 0.0), found.pop("nan_kept"))
        out.update(found)
    return out


def compare_fold_with_reference(
    device: str | torch.device = "cuda", *, every_variant: bool = True
) -> dict[str, float]:
    """Both comparisons of the folded kernels in one table (what the start-up probe and the card
    check read): :func:`compare_folded_with_reference` and :func:`compare_last_with_reference`,
    ``nan_kept`` 1 where either lost a NaN."""
    layers = compare_folded_with_reference(device, every_variant=every_variant)
    last = compare_last_with_reference(device, every_variant=every_variant)
    return {**layers, **last, "nan_kept": max(layers["nan_kept"], last["nan_kept"])}
