"""Checkpoints: everything needed to resume a run exactly where it stopped.

A checkpoint of run e of a batch is one dict::

    {
        "format": "gni-checkpoint/1",
        "engine_version": str,
        "engine_fingerprint": str,         # gni_engine.provenance: the code that wrote it
        "spec": dict,                      # the run spec (JSON form)
        "step": int,                       # steps done
        "status": str, "error": str | None,
        "weights": {name: tensor},         # stacked layout of run e (the layer's (d_in, d_out) view)
        "optimiser": {"step_count": int, "state": {f"{param}.{key}": tensor}},
        "generators": {"noise" | "shuffle" | "analysis": uint8 state tensor},
        "order": tensor | None, "position": int,   # the current epoch's data order
        "metrics": [[step, name, value], ...],
    }

It is stored as safetensors (tensors) with the rest as JSON metadata, so loading never unpickles.
Resuming a batch from its runs' checkpoints continues bit-identically on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gni_engine import __version__
from gni_engine.provenance import engine_fingerprint
from gni_engine.recording import MetricRow
from gni_engine.spec import RunSpec
from gni_engine.training import BatchTrainer

FORMAT = "gni-checkpoint/1"


def run_checkpoint(trainer: BatchTrainer, e: int) -> dict[str, Any]:
    """Run e's checkpoint (tensors copied to the CPU)."""
    params = trainer.net.parameters()
    state = trainer.states[e]
    optimiser: dict[str, torch.Tensor] = {}
    for i, slot in enumerate(trainer.optimiser.state):
        for key, value in slot.items():
            optimiser[f"{i}.{key}"] = value[e].detach().cpu().clone()
    return {
        "format": FORMAT,
        "engine_version": __version__,
        "engine_fingerprint": engine_fingerprint(),
        "spec": state.spec.model_dump(mode="json"),
        "step": trainer.step,
        "status": state.status,
        "error": state.error,
        "failed_step": state.failed_step,
        "weights": {str(i): p[e].detach().cpu().clone() for i, p in enumerate(params)},
        "optimiser": {"step_count": trainer.optimiser.step_count, "state": optimiser},
        "generators": {
            "noise": trainer.noise_generators[e].get_state(),
            "shuffle": trainer.shuffle_generators[e].get_state(),
            "analysis": trainer.analysis_generators[e].get_state(),
        },
        # where its random streams can continue: (device type, noise stream)
        "noise": [trainer.device.type, trainer.noise_stream],
        # counter-based training noise (GPU): the run's Philox counter; None with generator noise
        "noise_counter": None if trainer.noise_streams is None else trainer.noise_streams.state(e),
        "order": None if trainer.epoch_order is None else trainer.epoch_order[e].detach().cpu().clone(),
        "position": trainer.epoch_position,
        "metrics": [[r.step, r.name, r.value] for r in state.metrics],
    }


def restore(trainer: BatchTrainer, checkpoints: list[dict[str, Any]]) -> None:
    """Put a fresh trainer (built from the same specs) back into the checkpointed state."""
    if len(checkpoints) != len(trainer.specs):
        raise ValueError(f"{len(checkpoints)} checkpoints for a batch of {len(trainer.specs)} runs")
    steps = {c["step"] for c in checkpoints}
    if len(steps) != 1:
        raise ValueError(f"checkpoints of one batch must be at one step, got {sorted(steps)}")
    for e, (spec, ckpt) in enumerate(zip(trainer.specs, checkpoints, strict=True)):
        if ckpt.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} checkpoint")
        if RunSpec.model_validate(ckpt["spec"]).spec_hash() != spec.spec_hash():
            raise ValueError(f"checkpoint {e} belongs to another spec")
    device = trainer.device
    with torch.no_grad():
        for i, p in enumerate(trainer.net.parameters()):
            p.copy_(torch.stack([c["weights"][str(i)] for c in checkpoints]).to(device=device, dtype=p.dtype))
    step_count = checkpoints[0]["optimiser"]["step_count"]
    trainer.optimiser.step_count = step_count
    keys = checkpoints[0]["optimiser"]["state"].keys()
    trainer.optimiser.state = [{} for _ in trainer.optimiser.params]
    for key in keys:
        i, name = key.split(".", 1)
        stacked = torch.stack([c["optimiser"]["state"][key] for c in checkpoints]).to(device)
        trainer.optimiser.state[int(i)][name] = stacked
    for e, ckpt in enumerate(checkpoints):
        trainer.noise_generators[e].set_state(ckpt["generators"]["noise"])
        trainer.shuffle_generators[e].set_state(ckpt["generators"]["shuffle"])
        trainer.analysis_generators[e].set_state(ckpt["generators"]["analysis"])
        state = trainer.states[e]
        state.status, state.error, state.failed_step = ckpt["status"], ckpt["error"], ckpt.get("failed_step")
        state.metrics = [MetricRow(int(s), str(n), float(v)) for s, n, v in ckpt["metrics"]]
        trainer.active[e] = state.status == "running"
    if trainer.noise_streams is not None:
        counters: list[int] = []
        for ckpt in checkpoints:
            counter = ckpt.get("noise_counter")
            if counter is None:
                raise ValueError("checkpoint has no noise counter: it was written with generator noise")
            counters.append(int(counter))
        trainer.noise_streams.load(counters)
    orders = [c["order"] for c in checkpoints]
    trainer.epoch_order = None if orders[0] is None else torch.stack(orders).to(device)
    trainer.epoch_position = int(checkpoints[0]["position"])
    trainer.step = int(checkpoints[0]["step"])


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically: tensors in safetensors, everything else as JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in checkpoint["weights"].items():
        tensors[f"weights/{name}"] = t.contiguous()
    for name, t in checkpoint["optimiser"]["state"].items():
        tensors[f"optimiser/{name}"] = t.contiguous()
    for name, t in checkpoint["generators"].items():
        tensors[f"generators/{name}"] = t.contiguous()
    if checkpoint["order"] is not None:
        tensors["order"] = checkpoint["order"].contiguous()
    meta = {k: v for k, v in checkpoint.items() if k not in {"weights", "generators", "order"}}
    meta["optimiser"] = {"step_count": checkpoint["optimiser"]["step_count"]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp), metadata={"gni": json.dumps(meta, allow_nan=True)})
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (no pickle involved)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "gni" not in metadata:
        raise ValueError(f"{path} is not a gni checkpoint")
    meta: dict[str, Any] = json.loads(metadata["gni"])
    tensors = load_file(str(path))
    meta["weights"] = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("weights/")}
    meta["optimiser"]["state"] = {
        k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("optimiser/")
    }
    meta["generators"] = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("generators/")}
    meta["order"] = tensors.get("order")
    return meta
