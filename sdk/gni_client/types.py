"""Typed answers of the service: frozen dataclasses read from its JSON.

Unknown fields are ignored (a newer server can add some); ``raw`` keeps the whole answer. Tables
convert to pandas when it is installed (``pip install gni-client[pandas]``); the test suite checks
every field here against the live service's OpenAPI document.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped]

__all__ = [
    "Aggregate",
    "AggregateGroup",
    "Artifact",
    "Experiment",
    "ExperimentDeleted",
    "ExperimentPlan",
    "MetricSeries",
    "MetricStats",
    "Progress",
    "Run",
    "RunMetrics",
    "RunStatus",
    "StatusCounts",
    "runs_to_pandas",
]

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

T = TypeVar("T", bound="Model")


def require_pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install 'gni-client[pandas]'") from None
    return pandas


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Model:
    """Base of the answers: built from JSON by :meth:`from_dict`, the JSON kept in ``raw``."""

    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        values: dict[str, Any] = {"raw": data}
        for f in dataclasses.fields(cls):
            if f.name != "raw" and f.name in data:
                values[f.name] = cls._read(f.name, data[f.name])
        return cls(**values)

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class MetricStats(Model):
    """A metric over a group of runs: mean, sample standard deviation, standard error, count."""

    mean: float | None = None
    std: float | None = None
    stderr: float | None = None
    n: int = 0


def _stats(value: Any) -> dict[str, MetricStats]:
    return {k: MetricStats.from_dict(v) for k, v in (value or {}).items()}


@dataclass(frozen=True)
class StatusCounts(Model):
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class Progress(Model):
    steps_done: int = 0
    steps_total: int = 0
    fraction: float = 0.0


@dataclass(frozen=True)
class Experiment(Model):
    """A named sweep and where its runs stand."""

    id: str = ""
    name: str = ""
    status: RunStatus = "queued"
    run_count: int = 0
    counts: StatusCounts = field(default_factory=lambda: StatusCounts({}))
    progress: Progress | None = None
    summary: dict[str, MetricStats] | None = None
    preset: str | None = None
    owner: str | None = None
    cancel_requested: bool = False
    spec_hash: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    figures_state: Literal["pending", "drawing", "drawn", "failed"] = "pending"
    figures_error: str | None = None
    run_figures: bool = True
    links: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        if name == "counts":
            return StatusCounts.from_dict(value or {})
        if name == "progress":
            return Progress.from_dict(value) if value is not None else None
        if name == "summary":
            return _stats(value) if value is not None else None
        if name.endswith("_at"):
            return _time(value)
        return value


@dataclass(frozen=True)
class PlannedRun(Model):
    position: int = 0
    coords: dict[str, Any] = field(default_factory=dict)
    spec_hash: str = ""


@dataclass(frozen=True)
class ExperimentDeleted(Model):
    """What deleting an experiment removed."""

    id: str = ""
    deleted: bool = True
    runs: int = 0
    artifacts: int = 0
    objects_to_delete: int = 0


@dataclass(frozen=True)
class ExperimentPlan(Model):
    """A dry run's answer: what would be created, stored nowhere."""

    run_count: int = 0
    batch_count: int = 0
    batches: list[list[int]] = field(default_factory=list)
    estimated_flops: float = 0.0
    runs: list[PlannedRun] = field(default_factory=list)
    dry_run: bool = True

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return [PlannedRun.from_dict(r) for r in value] if name == "runs" else value


@dataclass(frozen=True)
class Run(Model):
    """One expanded spec of an experiment: its coordinates, status, progress and results."""

    id: str = ""
    experiment_id: str = ""
    position: int = 0
    status: RunStatus = "queued"
    coords: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    spec_hash: str = ""
    attempt: int = 0
    cancel_requested: bool = False
    progress: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    error: str | None = None
    device: str | None = None
    reused_from: str | None = None
    queued_at: datetime | None = None
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: dict[str, str] = field(default_factory=dict)

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return _time(value) if name.endswith("_at") else value

    def row(self) -> dict[str, Any]:
        """A flat row: id, position, status, each coordinate, ``summary.*`` scalars, error."""
        row: dict[str, Any] = {"id": self.id, "position": self.position, "status": self.status}
        row.update(self.coords)
        for key, value in (self.summary or {}).items():
            if value is None or isinstance(value, str | int | float | bool):
                row[f"summary.{key}"] = value
        row["error"] = self.error
        return row


def runs_to_pandas(runs: Iterable[Run]) -> pandas.DataFrame:
    """One row per run (see :meth:`Run.row`)."""
    return require_pandas().DataFrame([run.row() for run in runs])


@dataclass(frozen=True)
class MetricSeries(Model):
    name: str = ""
    steps: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class RunMetrics(Model):
    """A run's recorded series (downsampled by the server to ``max_points``)."""

    run_id: str = ""
    names: list[str] = field(default_factory=list)
    series: list[MetricSeries] = field(default_factory=list)

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return [MetricSeries.from_dict(s) for s in value] if name == "series" else value

    def __getitem__(self, name: str) -> MetricSeries:
        for series in self.series:
            if series.name == name:
                return series
        raise KeyError(name)

    def to_pandas(self) -> pandas.DataFrame:
        """Long form: one row per (name, step, value); NaN where the value was not finite."""
        pd = require_pandas()
        rows = [
            (s.name, step, value) for s in self.series for step, value in zip(s.steps, s.values, strict=False)
        ]
        frame = pd.DataFrame(rows, columns=["name", "step", "value"])
        frame["value"] = frame["value"].astype(float)
        return frame


@dataclass(frozen=True)
class AggregateGroup(Model):
    key: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, MetricStats] = field(default_factory=dict)

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return _stats(value) if name == "metrics" else value


@dataclass(frozen=True)
class Aggregate(Model):
    """Mean, std, standard error and n of each metric per group of runs: a paper's table."""

    experiment_id: str = ""
    group_by: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    groups: list[AggregateGroup] = field(default_factory=list)

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return [AggregateGroup.from_dict(g) for g in value] if name == "groups" else value

    def rows(self) -> list[dict[str, Any]]:
        """One dict per group: the group keys, then ``mean, std, stderr, n`` (prefixed by the metric
        when there are several)."""
        out = []
        for group in self.groups:
            row = {path: group.key.get(path) for path in self.group_by}
            for metric in self.metrics:
                stats = group.metrics.get(metric, MetricStats({}))
                prefix = f"{metric}." if len(self.metrics) > 1 else ""
                row.update({f"{prefix}{k}": getattr(stats, k) for k in ("mean", "std", "stderr", "n")})
            out.append(row)
        return out

    def to_pandas(self) -> pandas.DataFrame:
        return require_pandas().DataFrame(self.rows())


@dataclass(frozen=True)
class Artifact(Model):
    """A stored file of a run (``run_id`` set) or of a whole experiment."""

    id: str = ""
    experiment_id: str = ""
    run_id: str | None = None
    kind: str = ""
    name: str = ""
    content_type: str = ""
    size: int = 0
    sha256: str = ""
    created_at: datetime | None = None
    download_url: str = ""

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return _time(value) if name.endswith("_at") else value


def artifacts_to_pandas(artifacts: Sequence[Artifact]) -> pandas.DataFrame:
    fields = [f.name for f in dataclasses.fields(Artifact) if f.name != "raw"]
    return require_pandas().DataFrame([{k: getattr(a, k) for k in fields} for a in artifacts], columns=fields)


def model_fields(cls: type[Model]) -> list[str]:
    """The JSON fields a model reads (for the drift test against the OpenAPI document)."""
    return [f.name for f in dataclasses.fields(cls) if f.name != "raw"]
