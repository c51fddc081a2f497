r"""R against the actual effect of noise at initialisation (DIGEST §4.3), for many networks at once.

For each run the network is taken at its seeded initial weights (no training) and, on one minibatch
B of ``training.batch_size`` examples drawn from the run's shuffle stream,

.. math:: R(B;\theta_0) \quad\text{vs}\quad \mathbb{E}_\varepsilon[L(\text{noisy})] - L(\text{clean}),

the latter by ``analyses.noise_gap_samples`` antithetic pairs. Runs are stacked in chunks, so
hundreds of initialisations cost a few batched passes.

>>> from gni_engine.spec import RunSpec
>>> specs = [RunSpec.model_validate({"task": "regression", "data": {"name": "diabetes"},
...     "model": {"hidden": [16, 16], "activation": "elu"}, "noise": {"sigma": 0.1},
...     "training": {"batch_size": 8}, "analyses": {"noise_gap_samples": 512}, "seed": s})
...     for s in range(3)]
>>> rows = regulariser_at_init(specs)
>>> sorted(rows[0])  # doctest: +NORMALIZE_WHITESPACE
['R_per_layer', 'R_total', 'clean_loss', 'noise_gap', 'noise_gap_stderr', 'sigma_squared']
>>> all(r["R_total"] > 0 and len(r["R_per_layer"]) == 3 for r in rows)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gni_engine.data import Dataset, build_dataset
from gni_engine.losses import run_losses
from gni_engine.networks import build_network
from gni_engine.noise import NoiseScales
from gni_engine.regulariser import stacked_noise_gap, stacked_regulariser
from gni_engine.seeding import make_generator
from gni_engine.spec import RunSpec
from gni_engine.stacked import stack_networks
from gni_engine.training import DTYPES, batch_key, resolve_device


def _minibatch(
    specs: Sequence[RunSpec], data: Dataset, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each run's first minibatch from its own shuffle stream: x (E, B, …), y (E, B, …)."""
    n = data.x_train.shape[0]
    size = min(specs[0].training.batch_size or n, n)
    idx = torch.stack([torch.randperm(n, generator=make_generator(s.seed, "shuffle"))[:size] for s in specs])
    return data.x_train[idx].to(device), data.y_train[idx].to(device)


def _chunk(specs: Sequence[RunSpec], data: Dataset) -> list[dict[str, Any]]:
    first = specs[0]
    device = resolve_device(first)
    dtype = DTYPES[first.execution.precision]
    nets = [
        build_network(
            s, data.input_shape, data.n_outputs, generator=make_generator(s.seed, "init"), dtype=torch.float64
        )
        for s in specs
    ]
    net = stack_networks(nets, requires_grad=False)
    for p in net.parameters():
        p.data = p.data.to(device=device, dtype=dtype)
    x, y = _minibatch(specs, data, device)
    x = x.to(dtype)
    if first.loss == "mse":
        y = y.to(dtype)
    scales = NoiseScales.from_sigmas(
        [s.injection_sigmas() for s in specs], [s.noise.kind for s in specs], dtype=dtype, device=device
    )
    terms = (
        stacked_regulariser(net, x, scales, first.loss, create_graph=False).detach().double().cpu()
    )  # (E, L)
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    generators = [make_generator(s.seed, "analysis", gen_device) for s in specs]
    gap, stderr = stacked_noise_gap(
        net, x, y, scales, first.loss, samples=first.analyses.noise_gap_samples, generators=generators
    )
    with torch.no_grad():
        clean = run_losses(first.loss, net.forward(x).output, y).double().cpu()
    gaps, errs = gap.double().cpu().tolist(), stderr.double().cpu().tolist()
    return [
        {
            "R_total": float(terms[e].sum()),
            "R_per_layer": terms[e].tolist(),
            "noise_gap": gaps[e],
            "noise_gap_stderr": errs[e],
            "clean_loss": float(clean[e]),
            "sigma_squared": specs[e].injection_sigmas()[0] ** 2,
        }
        for e in range(len(specs))
    ]


def regulariser_at_init(specs: Sequence[RunSpec], *, chunk_size: int = 128) -> list[dict[str, Any]]:
    """Per run (in input order): R_total, R_per_layer, noise_gap (± noise_gap_stderr), clean_loss.

    ``specs`` may mix noise levels and seeds but must share architecture and data shapes (one batch
    key); ``noise_gap_samples`` must be positive. Runs sharing a data seed are evaluated
    ``chunk_size`` at a time.
    """
    if not specs:
        return []
    if len({batch_key(s) for s in specs}) > 1:
        raise ValueError("regulariser_at_init: runs must share architecture and data")
    if specs[0].analyses.noise_gap_samples < 1:
        raise ValueError("regulariser_at_init needs analyses.noise_gap_samples >= 1")
    by_data_seed: dict[int, list[int]] = {}
    for i, s in enumerate(specs):
        by_data_seed.setdefault(s.effective_data_seed, []).append(i)
    out: dict[int, dict[str, Any]] = {}
    dtype = DTYPES[specs[0].execution.precision]
    for indices in by_data_seed.values():
        data = build_dataset(specs[indices[0]], dtype=dtype)
        for start in range(0, len(indices), chunk_size):
            part = indices[start : start + chunk_size]
            out.update(zip(part, _chunk([specs[i] for i in part], data), strict=True))
    return [out[i] for i in range(len(specs))]
