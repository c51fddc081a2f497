"""Executing many runs: grouping them into stacked batches, training, and writing their files.

This is the engine's entry point for the service and the command line::

    outcomes = execute_runs(specs, out_dirs, hooks)

Runs sharing a :func:`~gni_engine.training.batch_key` train together, in batches sized from the
device's free memory and capped by ``execution.max_batch_runs``. A run that diverges fails alone;
a batch that cannot start (a missing data file, say) fails its own runs and no others.
Each run's folder receives ``results.json``, ``model.safetensors``, ``metrics.csv`` and ``spec.json``
(plus figures when the figures module provides them).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from safetensors.torch import save_file

from gni_engine import __version__
from gni_engine.data import input_output_dims
from gni_engine.errors import GNIError
from gni_engine.provenance import engine_fingerprint, software_facts
from gni_engine.recording import MetricRow
from gni_engine.spec import MLPSpec, RunSpec
from gni_engine.training import (
    BatchCallbacks,
    BatchTrainer,
    RunState,
    batch_key,
    flops_per_step,
    forward_macs,
)

__all__ = [
    "MetricRow",
    "RunCheckpoints",
    "RunHooks",
    "RunOutcome",
    "analyses_flops",
    "estimate_flops",
    "execute_runs",
    "plan_batches",
]


class RunHooks(Protocol):
    """What an executor learns while runs train; ``index`` is the run's position in the input list."""

    def on_start(self, index: int) -> None: ...

    def on_progress(self, index: int, step: int, total: int) -> None: ...

    def on_metrics(self, index: int, rows: Sequence[MetricRow]) -> None: ...

    def should_cancel(self, index: int) -> bool: ...


class RunCheckpoints(Protocol):
    """Where an executor keeps runs' checkpoints (``index`` as in :class:`RunHooks`).

    The engine saves the runs of a batch together every ``every`` steps, and before training a batch asks
    for each run's stored checkpoints (an executor may keep more than the last, so that a crash in the
    middle of saving a batch leaves the previous step whole): it resumes from the latest step at which
    every run of the batch has one (a re-queued batch may come back re-grouped); otherwise it trains
    from scratch. ``started`` tells the executor which it was, so that it can drop what the lost steps
    recorded.
    """

    every: int

    def load(self, index: int) -> Sequence[dict[str, Any]]: ...

    def save(self, checkpoints: dict[int, dict[str, Any]]) -> None:
        """The checkpoints of one batch's runs (by index), all taken at the same step."""
        ...

    def started(self, index: int, checkpoint: dict[str, Any] | None) -> None: ...


@dataclass
class RunOutcome:
    """The end of one run: its status, summary (JSON-able), failure reason and files written."""

    index: int
    status: Literal["succeeded", "failed", "cancelled"]
    summary: dict[str, Any]
    error: str | None
    files: dict[str, Path] = field(default_factory=dict)


class _BatchHooks(BatchCallbacks):
    def __init__(self, hooks: RunHooks | None, indices: Sequence[int]) -> None:
        self.hooks = hooks
        self.indices = indices

    def on_progress(self, index: int, step: int, total: int) -> None:
        if self.hooks is not None:
            self.hooks.on_progress(self.indices[index], step, total)

    def on_metrics(self, index: int, rows: Sequence[MetricRow]) -> None:
        if self.hooks is not None:
            self.hooks.on_metrics(self.indices[index], rows)

    def should_cancel(self, index: int) -> bool:
        return self.hooks is not None and self.hooks.should_cancel(self.indices[index])


def bytes_per_run(spec: RunSpec) -> int:
    """A generous estimate of the memory one run of a batch needs while it trains."""
    (input_shape, n_outputs) = input_output_dims(spec)
    n_in = math.prod(input_shape)
    width_sum = n_in + n_outputs
    n_params = 0
    if isinstance(spec.model, MLPSpec):
        dims = [n_in, *spec.model.hidden, n_outputs]
        width_sum = sum(dims)
        n_params = sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))
    else:
        c1, c2 = spec.model.channels
        width_sum = n_in * (1 + c1 + c2)
        n_params = c1 * 16 * input_shape[0] + c2 * c1 * 16 + c2 * n_in
    size = 8 if spec.execution.precision == "fp64" else 4
    n_points = _train_points(spec)
    examples = min(n_points, spec.training.batch_size or n_points) * spec.training.noise_samples
    per_example = width_sum * (6 if spec.training.mode != "explicit" else 14)
    return int(size * (4 * n_params + examples * per_example + n_points * n_in))


def _train_points(spec: RunSpec) -> int:
    n = getattr(spec.data, "n_points", None)
    if isinstance(n, int):
        return n
    subset = getattr(spec.data, "subset", None)
    return subset if isinstance(subset, int) else 60_000


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's own figure, or MemAvailable for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 4 * 1024**3


def plan_batches(specs: Sequence[RunSpec], *, memory_bytes: int | None = None) -> list[list[int]]:
    """Indices grouped into stacked batches: same batch key, within half the free memory and the cap.

    Without ``memory_bytes`` each group's budget is half the free memory of the device its runs
    ask for (measured once per device: a sweep over ``execution.device`` plans each by its own).
    """
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(batch_key(spec), []).append(i)
    free_by_device: dict[str, int] = {}
    batches: list[list[int]] = []
    for indices in groups.values():
        available = memory_bytes
        if available is None:
            available = _free_memory_for(specs[indices[0]], free_by_device)
        budget = available // 2
        largest = max(bytes_per_run(specs[i]) for i in indices)  # modes and M differ within a group
        fit = max(1, budget // max(1, largest))
        caps = [specs[i].execution.max_batch_runs for i in indices]
        cap = min([fit, *(c for c in caps if c is not None)])  # every run's own cap holds
        batches.extend(indices[i : i + cap] for i in range(0, len(indices), cap))
    return batches


def _free_memory_for(spec: RunSpec, measured: dict[str, int]) -> int:
    """Free memory of the run's device (4 GiB when it cannot be resolved), measured once per device."""
    from gni_engine.training import resolve_device

    try:
        device = resolve_device(spec)
    except GNIError:
        return 4 * 1024**3  # the run fails on its device anyway, with the error that names it
    if str(device) not in measured:
        measured[str(device)] = free_memory_bytes(device)
    return measured[str(device)]


def estimate_flops(spec: RunSpec) -> float:
    """FLOPs of one run: its training steps and its measurements (matmul work only; an estimate for
    planning, time limits and cost reports)."""
    input_shape, n_outputs = input_output_dims(spec)
    n_points = _train_points(spec)
    examples = min(n_points, spec.training.batch_size or n_points)
    training = flops_per_step(spec, input_shape, n_outputs, examples) * spec.training.steps
    return training + analyses_flops(spec, input_shape, n_outputs)


def analyses_flops(spec: RunSpec, input_shape: Sequence[int], n_outputs: int) -> float:
    """FLOPs of a run's measurements on the clean network, counted in forward passes ``F`` over the
    evaluation points (``min(points, analyses.max_eval_points)``; a backward pass counts as 2F).

    Each record step (step 0, every ``record_every``, the last) takes 2F (losses, the spectral grid)
    plus, with ``regulariser``, 3F per output (R needs a backward pass per output of H_L) plus, with
    ``noise_gap_every``, the noise gap's 2 · ``noise_gap_samples`` noisy forward passes. The summary
    takes the noise gap once and, for classifiers with ``margins``, 3F per class (input margins).
    """
    a = spec.analyses
    forward = 2.0 * forward_macs(spec, input_shape, n_outputs) * min(_train_points(spec), a.max_eval_points)
    noise_gap = 2.0 * a.noise_gap_samples * forward
    per_record = 2.0 * forward
    if a.regulariser:
        per_record += 3.0 * forward * n_outputs
    if a.noise_gap_every:
        per_record += noise_gap
    records = math.ceil(spec.training.steps / a.record_every) + 1
    summary = noise_gap
    if spec.task == "classification" and a.margins:
        summary += 3.0 * forward * n_outputs
    return records * per_record + summary


def write_run_files(state: RunState, out_dir: Path, label: str | None = None) -> dict[str, Path]:
    """results.json, model.safetensors, metrics.csv (tidy: run, step, name, value) and spec.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps(state.spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    files["spec.json"] = spec_path
    if state.weights:
        weights_path = out_dir / "model.safetensors"
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.weights.items()}
        save_file(tensors, str(weights_path), metadata={"spec_hash": state.spec.spec_hash()})
        files["model.safetensors"] = weights_path
    metrics_path = out_dir / "metrics.csv"
    run_label = label or state.spec.spec_hash()[:12]
    with metrics_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "name", "value"])
        writer.writerows((run_label, r.step, r.name, repr(r.value)) for r in state.metrics)
    files["metrics.csv"] = metrics_path
    results = {
        "status": state.status,
        "error": state.error,
        "spec_hash": state.spec.spec_hash(),
        "spec": state.spec.model_dump(mode="json"),
        "summary": _json_safe(state.summary),
    }
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(results, indent=2, sort_keys=True, allow_nan=False) + "\n")
    files["results.json"] = results_path
    return files


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN); containers are walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _figures(
    states: Sequence[RunState], trainer: BatchTrainer, out_dirs: Sequence[Path], processes: int | None
) -> list[dict[str, Path]]:
    """Each succeeded run's figures as ``{"figures/<name>": path}`` (empty for the others)."""
    try:
        from gni_engine.figures.processes import FigureJob, draw_figures
    except ImportError:  # matplotlib is an optional dependency of the engine
        return [{} for _ in states]
    drawn = [e for e, state in enumerate(states) if state.status == "succeeded"]
    jobs = [FigureJob(states[e], trainer.datasets[e], out_dirs[e] / "figures") for e in drawn]
    files = dict(zip(drawn, draw_figures(jobs, processes), strict=True))
    return [{f"figures/{p.name}": p for p in files.get(e, {}).values()} for e in range(len(states))]


def execute_runs(
    specs: Sequence[RunSpec],
    out_dirs: Sequence[Path],
    hooks: RunHooks | None = None,
    *,
    batch: bool = True,
    checkpoints: RunCheckpoints | None = None,
    figures: bool = True,
    figure_processes: int | None = None,
) -> list[RunOutcome]:
    """Train every run (stacked in batches unless ``batch`` is false) and write its files.

    With ``checkpoints``, each batch resumes from its runs' last checkpoints when it can (see
    :class:`RunCheckpoints`) and saves new ones as it trains. ``figures=False`` skips each run's
    figures (1–3 s of drawing a run on one core, often more than its training in a large sweep);
    ``figure_processes`` says how many processes draw them (``None``: one per available core; see
    :mod:`gni_engine.figures.processes`).
    """
    if len(specs) != len(out_dirs):
        raise ValueError(f"{len(specs)} specs but {len(out_dirs)} output folders")
    batches = plan_batches(specs) if batch else [[i] for i in range(len(specs))]
    outcomes: dict[int, RunOutcome] = {}
    for indices in batches:
        for i in indices:
            if hooks is not None:
                hooks.on_start(i)
        outcomes.update(
            _execute_batch(
                specs,
                out_dirs,
                indices,
                hooks,
                checkpoints,
                figures=figures,
                figure_processes=figure_processes,
            )
        )
    return [outcomes[i] for i in range(len(specs))]


def resumable(
    checkpoints: Sequence[dict[str, Any] | None],
    specs: Sequence[RunSpec],
    noise: tuple[str, str] | None = None,
) -> bool:
    """Whether a batch can resume from these checkpoints: one per run, its own spec, one step,
    written by this very engine (its version and :func:`~gni_engine.provenance.engine_fingerprint`:
    other code may train differently, so a run never mixes two codes; it starts over instead).

    ``noise`` = (device type, noise stream) of the resuming trainer: a checkpoint written on another
    kind of device or with another noise stream (GPU counters vs CPU generators) cannot continue its
    random streams there, so the batch starts over instead. Checkpoints that predate the field were
    written with generator noise.

    >>> resumable([None], [])
    False
    """
    if not checkpoints or len(checkpoints) != len(specs) or any(c is None for c in checkpoints):
        return False
    steps = {c["step"] for c in checkpoints if c is not None}
    this_code = [__version__, engine_fingerprint()]
    if any(
        c is not None and [c.get("engine_version"), c.get("engine_fingerprint")] != this_code
        for c in checkpoints
    ):
        return False
    same_specs = all(
        c is not None and RunSpec.model_validate(c["spec"]).spec_hash() == spec.spec_hash()
        for c, spec in zip(checkpoints, specs, strict=True)
    )
    if noise is not None:
        device_type, stream = noise
        for c in checkpoints:
            assert c is not None
            written = c.get("noise") or [device_type, "torch-generator"]
            if list(written) != [device_type, stream]:
                return False
    return len(steps) == 1 and same_specs


def _start(trainer: BatchTrainer, indices: Sequence[int], checkpoints: RunCheckpoints) -> None:
    """Restore the trainer from its runs' checkpoints when they allow it; tell the executor which."""
    from gni_engine.checkpoint import restore

    noise = (trainer.device.type, trainer.noise_stream)
    # latest_common keeps only usable checkpoints (own spec, same device and noise stream)
    chosen = latest_common([checkpoints.load(i) for i in indices], trainer.specs, noise)
    resume = bool(chosen) and all(c is not None for c in chosen)
    if resume:
        restore(trainer, [c for c in chosen if c is not None])
    for i, checkpoint in zip(indices, chosen, strict=True):
        checkpoints.started(i, checkpoint if resume else None)


def latest_common(
    stored: Sequence[Sequence[dict[str, Any]]],
    specs: Sequence[RunSpec],
    noise: tuple[str, str] | None = None,
) -> list[dict[str, Any] | None]:
    """Per run, its checkpoint at the latest step at which every run has a usable one (its own spec,
    and with ``noise`` its device type and noise stream, see :func:`resumable`); all ``None`` if none.

    >>> from gni_engine.provenance import engine_fingerprint
    >>> from gni_engine.spec import RunSpec
    >>> spec = RunSpec()
    >>> code = {"engine_version": __version__, "engine_fingerprint": engine_fingerprint()}
    >>> mine = {"spec": spec.model_dump(mode="json"), **code}
    >>> both = [[{**mine, "step": 5}, {**mine, "step": 3}], [{**mine, "step": 3}]]
    >>> [c and c["step"] for c in latest_common(both, [spec, spec])]
    [3, 3]
    >>> latest_common([[{**mine, "step": 5}], []], [spec, spec])
    [None, None]
    """
    if not stored or len(stored) != len(specs):
        return [None] * len(stored)
    usable = [
        [c for c in versions if resumable([c], [spec], noise)]
        for versions, spec in zip(stored, specs, strict=True)
    ]
    steps = set.intersection(*({int(c["step"]) for c in versions} for versions in usable))
    if not steps:
        return [None] * len(stored)
    step = max(steps)
    return [next(c for c in versions if int(c["step"]) == step) for versions in usable]


def _checkpointer(indices: Sequence[int], checkpoints: RunCheckpoints) -> Callable[[BatchTrainer], None]:
    from gni_engine.checkpoint import run_checkpoint

    def save(trainer: BatchTrainer) -> None:
        checkpoints.save({i: run_checkpoint(trainer, e) for e, i in enumerate(indices)})

    return save


def _execute_batch(
    specs: Sequence[RunSpec],
    out_dirs: Sequence[Path],
    indices: Sequence[int],
    hooks: RunHooks | None,
    checkpoints: RunCheckpoints | None = None,
    *,
    figures: bool = True,
    figure_processes: int | None = None,
) -> dict[int, RunOutcome]:
    try:
        trainer = BatchTrainer([specs[i] for i in indices], callbacks=_BatchHooks(hooks, indices))
        if checkpoints is None:
            states = trainer.run()
        else:
            _start(trainer, indices, checkpoints)
            states = trainer.run(
                checkpoint_every=checkpoints.every, on_checkpoint=_checkpointer(indices, checkpoints)
            )
    except GNIError as error:
        out_failed: dict[int, RunOutcome] = {}
        for i in indices:
            failed = RunState(specs[i], status="failed", error=error.message)
            failed.summary = {
                "engine_version": __version__,
                **software_facts(),
                "spec_hash": specs[i].spec_hash(),
            }
            files = write_run_files(failed, out_dirs[i], label=os.path.basename(out_dirs[i]))
            out_failed[i] = RunOutcome(i, "failed", {}, error.message, files)  # summary as before
        return out_failed
    batch_dirs = [out_dirs[i] for i in indices]
    drawn = _figures(states, trainer, batch_dirs, figure_processes) if figures else [{} for _ in states]
    out: dict[int, RunOutcome] = {}
    for i, state, figure_files in zip(indices, states, drawn, strict=True):
        files = write_run_files(state, out_dirs[i], label=os.path.basename(out_dirs[i]))
        files.update(figure_files)
        status: Literal["succeeded", "failed", "cancelled"] = (
            "succeeded"
            if state.status == "succeeded"
            else "cancelled"
            if state.status == "cancelled"
            else "failed"
        )
        out[i] = RunOutcome(i, status, _json_safe(state.summary), state.error, files)
    return out
