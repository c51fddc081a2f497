"""What a batch records while it trains: the context handed to recorders, and the core recorders.

A recorder looks at the clean (noise-free) stacked network and returns metric rows per run, without
a Python loop over runs. Analyses (spectra, layer norms, calibration, margins) plug in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from gni_engine.data import Dataset
from gni_engine.losses import LossName, run_losses
from gni_engine.noise import NoiseScales
from gni_engine.regulariser import stacked_regulariser
from gni_engine.spec import RunSpec
from gni_engine.stacked import StackedNetwork


@dataclass(frozen=True)
class MetricRow:
    """One value of one metric of one run at one step."""

    step: int
    name: str
    value: float


@dataclass
class RecordContext:
    """Everything a recorder may look at; tensors are stacked over the E runs of the batch."""

    specs: Sequence[RunSpec]
    datasets: Sequence[Dataset]
    net: StackedNetwork
    loss: LossName
    x_train: torch.Tensor  # (E, N, …) capped at analyses.max_eval_points
    y_train: torch.Tensor
    x_test: torch.Tensor  # (E, N_test, …), possibly N_test = 0
    y_test: torch.Tensor
    scales: NoiseScales  # the specs' σ, whatever the training mode
    generators: Sequence[torch.Generator]  # per-run analysis streams
    step: int
    final: bool = False
    cache: dict[str, Any] = field(default_factory=dict)

    def clean_output(self, split: str) -> torch.Tensor:
        key = f"output/{split}"
        if key not in self.cache:
            x = self.x_train if split == "train" else self.x_test
            with torch.no_grad():
                self.cache[key] = self.net.forward(x).output
        out: torch.Tensor = self.cache[key]
        return out


Rows = list[list[MetricRow]]  # rows[e] = that run's rows


class Recorder(Protocol):
    """Returns per-run metric rows at a record step, and per-run summary entries at the end."""

    def record(self, ctx: RecordContext) -> Rows: ...

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]: ...


def rows_from(step: int, name: str, values: torch.Tensor) -> Rows:
    """(E,) values of one metric as rows."""
    return [[MetricRow(step, name, float(v))] for v in values.detach().double().cpu().tolist()]


def merge_rows(*parts: Rows) -> Rows:
    return [[row for part in parts for row in part[e]] for e in range(len(parts[0]))] if parts else []


class LossRecorder:
    """Clean train and test loss, and accuracy for classification."""

    def record(self, ctx: RecordContext) -> Rows:
        parts = [
            rows_from(ctx.step, "train_loss", run_losses(ctx.loss, ctx.clean_output("train"), ctx.y_train))
        ]
        if ctx.x_test.shape[1] > 0:
            parts.append(
                rows_from(ctx.step, "test_loss", run_losses(ctx.loss, ctx.clean_output("test"), ctx.y_test))
            )
        if ctx.loss == "cross_entropy":
            acc = (ctx.clean_output("train").argmax(-1) == ctx.y_train).double().mean(-1)
            parts.append(rows_from(ctx.step, "train_accuracy", acc))
            if ctx.x_test.shape[1] > 0:
                test_acc = (ctx.clean_output("test").argmax(-1) == ctx.y_test).double().mean(-1)
                parts.append(rows_from(ctx.step, "test_accuracy", test_acc))
        return merge_rows(*parts)

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]:
        rows = self.record(ctx)
        return [{row.name: row.value for row in run_rows} for run_rows in rows]


class RegulariserRecorder:
    """R per layer and in total, with the specs' σ, on the (capped) training inputs."""

    def _terms(self, ctx: RecordContext) -> torch.Tensor:
        if "R_terms" not in ctx.cache:
            terms = stacked_regulariser(ctx.net, ctx.x_train, ctx.scales, ctx.loss, create_graph=False)
            ctx.cache["R_terms"] = terms.detach()
        out: torch.Tensor = ctx.cache["R_terms"]
        return out

    def record(self, ctx: RecordContext) -> Rows:
        terms = self._terms(ctx)
        parts = [rows_from(ctx.step, f"R_layer_{k}", terms[:, k]) for k in range(terms.shape[1])]
        parts.append(rows_from(ctx.step, "R_total", terms.sum(1)))
        return merge_rows(*parts)

    def summarise(self, ctx: RecordContext) -> list[dict[str, Any]]:
        terms = self._terms(ctx).double().cpu()
        return [{"R_total": float(t.sum()), "R_per_layer": [float(v) for v in t]} for t in terms]
