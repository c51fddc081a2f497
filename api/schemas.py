"""Request and response bodies of the REST API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from sqlalchemy import Row

from gni_engine.spec import RunSpec, spec_error_from
from gni_engine.sweep import SweepSpec
from gni_service.aggregate import Aggregate
from gni_service.experiments import ExperimentPlan, ExperimentProgress
from gni_service.metrics import MetricSeries
from gni_service.models import Artifact, Experiment, FiguresState, Run, RunStatus

JsonDict = dict[str, JsonValue]

EXAMPLE_SPEC: JsonDict = {
    "task": "regression",
    "data": {"name": "sinusoids", "n_points": 64},
    "model": {"hidden": [16, 16]},
    "noise": {"sigma": 0.1},
    "training": {"steps": 200, "lr": 0.001},
}
EXAMPLE_AXES: JsonDict = {"training.mode": ["baseline", "gni"], "seed": [0, 1, 2]}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------- errors
class ErrorInfo(BaseModel):
    type: str = Field(description="Machine-readable kind: spec_error, not_found, conflict, …")
    message: str = Field(description="What went wrong, in a sentence a person can act on.")
    details: Any = Field(None, description="For spec_error: one {loc, msg} per offending field.")


class ErrorBody(BaseModel):
    """The one shape of every error answer."""

    error: ErrorInfo

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "type": "spec_error",
                        "message": "invalid run spec: noise.sigma: sigma must be finite and >= 0, got -1.0",
                        "details": [
                            {"loc": "base.noise.sigma", "msg": "sigma must be finite and >= 0, got -1.0"}
                        ],
                    }
                }
            ]
        }
    )


# -------------------------------------------------------------------------------- experiments
class PresetOverrides(Strict):
    steps: int | None = Field(None, ge=1, le=10_000_000, description="Training steps of every run.")
    seeds: int | None = Field(None, ge=1, le=1000, description="Number of seeds (0 … n−1) per arm.")
    variant: str | None = Field(None, max_length=64, description="The preset's data set; default its first.")
    axes: dict[str, list[Any]] | None = Field(
        None,
        description="Axes replacing (or added to) the preset's, e.g. {'training.mode': ['baseline', 'gni']}.",
    )


class ExperimentCreate(Strict):
    """A sweep (a base run spec and axes) or a preset name with overrides."""

    name: str | None = Field(
        None, min_length=1, max_length=200, description="Default: the preset or 'experiment'."
    )
    base: RunSpec | None = Field(None, description="The run spec every run starts from.")
    axes: dict[str, list[Any]] = Field(
        default_factory=dict, description="Grid axes: a dotted spec path → its values (Cartesian product)."
    )
    preset: str | None = Field(
        None, min_length=1, max_length=64, description="A preset name instead of base/axes."
    )
    overrides: PresetOverrides | None = Field(None, description="Only with preset.")
    reuse_results: bool = Field(
        False,
        description=(
            "Runs whose spec (canonical hash) you already trained to success with this engine version "
            "are created succeeded with that run's summary, metrics and artifacts (reused_from names "
            "it) instead of training again; the others are queued."
        ),
    )
    run_figures: bool = Field(
        True,
        description=(
            "Draw each run's own figures (loss curves, learned function, spectrum, spectral dynamics, "
            "layer norms, reliability, margins: PNG and SVG; 1-3 s of a CPU core a run). False: the runs "
            "store their numbers and weights only, for large sweeps; the experiment's comparison "
            "figures are drawn either way."
        ),
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "sigma-sweep", "base": EXAMPLE_SPEC, "axes": EXAMPLE_AXES},
                {
                    "preset": "spectral-bias",
                    "overrides": {"steps": 500, "seeds": 3, "axes": {"training.mode": ["baseline", "gni"]}},
                },
            ]
        },
    )

    @model_validator(mode="after")
    def _one_source(self) -> ExperimentCreate:
        if self.preset is not None and (self.base is not None or self.axes):
            raise ValueError("preset: give either a preset or base/axes, not both")
        if self.preset is None and self.base is None:
            raise ValueError("base: give a run spec as base (with optional axes), or a preset")
        if self.overrides is not None and self.preset is None:
            raise ValueError("overrides: overrides apply to a preset only")
        return self

    def sweep(self) -> SweepSpec:
        """The sweep of a base/axes request (raises SpecError naming a bad axis)."""
        assert self.base is not None
        try:
            return SweepSpec(base=self.base, axes=self.axes)
        except ValidationError as error:
            raise spec_error_from(error, "sweep spec") from None


class StatusCounts(BaseModel):
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class Progress(BaseModel):
    steps_done: int
    steps_total: int
    fraction: float = Field(ge=0.0, le=1.0)


class MetricStatsOut(BaseModel):
    mean: float | None
    std: float | None = Field(description="Sample standard deviation (n − 1); null for n < 2.")
    stderr: float | None = Field(description="std / √n; null for n < 2.")
    n: int


class ExperimentOut(BaseModel):
    id: str
    name: str
    owner: str | None
    preset: str | None
    status: RunStatus
    cancel_requested: bool
    run_count: int
    counts: StatusCounts
    progress: Progress | None = Field(None, description="Present on GET of one experiment.")
    summary: dict[str, MetricStatsOut] | None = Field(
        None, description="Present on GET of one experiment: key results over its succeeded runs."
    )
    spec_hash: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    figures_state: Literal["pending", "drawing", "drawn", "failed"] = Field(
        description="The experiment's comparison figures: drawn once it finishes (failed: see figures_error)."
    )
    figures_error: str | None = Field(description="Why the figures could not be drawn or stored.")
    run_figures: bool = Field(description="Whether each run gets its own figures (see the create request).")
    links: dict[str, str]

    @classmethod
    def of(
        cls,
        experiment: Experiment,
        progress: ExperimentProgress | None = None,
        summary: Aggregate | None = None,
    ) -> ExperimentOut:
        base = f"/v1/experiments/{experiment.id}"
        stats = None
        if summary is not None and summary.groups:
            stats = {k: MetricStatsOut(**vars(v)) for k, v in summary.groups[0].metrics.items() if v.n}
        return cls(
            id=experiment.id,
            name=experiment.name,
            owner=experiment.owner,
            preset=experiment.preset,
            status=experiment.status,
            cancel_requested=experiment.cancel_requested,
            run_count=experiment.n_runs,
            counts=StatusCounts(
                queued=experiment.n_queued,
                running=experiment.n_running,
                succeeded=experiment.n_succeeded,
                failed=experiment.n_failed,
                cancelled=experiment.n_cancelled,
            ),
            progress=(
                Progress(
                    steps_done=progress.steps_done,
                    steps_total=progress.steps_total,
                    fraction=progress.fraction,
                )
                if progress is not None
                else None
            ),
            summary=stats,
            spec_hash=experiment.spec_hash,
            base=experiment.base_spec,
            axes={str(axis["path"]): list(axis["values"]) for axis in experiment.axes},
            created_at=experiment.created_at,
            updated_at=experiment.updated_at,
            started_at=experiment.started_at,
            finished_at=experiment.finished_at,
            figures_state=FiguresState(experiment.figures_state).value,
            figures_error=experiment.figures_error,
            run_figures=experiment.run_figures,
            links={
                "self": base,
                "runs": f"{base}/runs",
                "aggregate": f"{base}/aggregate",
                "artifacts": f"{base}/artifacts",
                "cancel": f"{base}/cancel",
            },
        )


class PlannedRun(BaseModel):
    position: int
    coords: dict[str, Any]
    spec_hash: str


class ExperimentPlanOut(BaseModel):
    """A dry run: what the request would create, stored nowhere."""

    dry_run: Literal[True] = True
    run_count: int
    batch_count: int
    batches: list[list[int]] = Field(description="Run positions grouped into stacked batches.")
    estimated_flops: float = Field(
        description="FLOPs of all runs, training and measurements (matmul work; an estimate)."
    )
    runs: list[PlannedRun] = Field(description="The first runs of the expansion (at most 100).")

    @classmethod
    def of(cls, plan: ExperimentPlan) -> ExperimentPlanOut:
        return cls(
            run_count=plan.run_count,
            batch_count=len(plan.batches),
            batches=plan.batches,
            estimated_flops=plan.estimated_flops,
            runs=[PlannedRun(**run) for run in plan.runs],
        )


class ExperimentPage(BaseModel):
    items: list[ExperimentOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last.")


# --------------------------------------------------------------------------------------- runs
class RunProgress(BaseModel):
    step: int
    total: int


class RunOut(BaseModel):
    id: str
    experiment_id: str
    position: int = Field(description="Index of the run in the sweep's expansion order.")
    status: RunStatus
    coords: dict[str, Any] = Field(description="The run's values of the sweep axes.")
    spec: dict[str, Any]
    spec_hash: str
    attempt: int
    cancel_requested: bool
    progress: RunProgress
    summary: dict[str, Any] | None
    error: str | None
    device: str | None
    reused_from: str | None = Field(
        description="The run whose result this one took instead of training (reuse_results); null if trained."
    )
    queued_at: datetime
    heartbeat_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    links: dict[str, str]

    @classmethod
    def of(cls, run: Run | Row[Any]) -> RunOut:
        """From the ORM object or a row of the runs table (same attribute names)."""
        base = f"/v1/runs/{run.id}"
        return cls(
            id=run.id,
            experiment_id=run.experiment_id,
            position=run.position,
            status=run.status,
            coords=run.coords,
            spec=run.spec,
            spec_hash=run.spec_hash,
            attempt=run.attempt,
            cancel_requested=run.cancel_requested,
            progress=RunProgress(step=run.progress_step, total=run.progress_total),
            summary=run.summary,
            error=run.error,
            device=run.device,
            reused_from=run.reused_from,
            queued_at=run.queued_at,
            heartbeat_at=run.heartbeat_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            links={
                "self": base,
                "metrics": f"{base}/metrics",
                "artifacts": f"{base}/artifacts",
                "experiment": f"/v1/experiments/{run.experiment_id}",
            },
        )


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class SeriesOut(BaseModel):
    name: str
    steps: list[int]
    values: list[float | None] = Field(description="null where the value was not finite (a diverged run).")


class MetricsOut(BaseModel):
    run_id: str
    names: list[str] = Field(description="Every series the run recorded.")
    series: list[SeriesOut]

    @classmethod
    def of(cls, run_id: str, names: list[str], series: list[MetricSeries]) -> MetricsOut:
        return cls(run_id=run_id, names=names, series=[SeriesOut(**vars(s)) for s in series])


class AggregateGroupOut(BaseModel):
    key: dict[str, Any] = Field(description="The group's value of each group_by path.")
    metrics: dict[str, MetricStatsOut]


class AggregateOut(BaseModel):
    experiment_id: str
    group_by: list[str]
    metrics: list[str]
    groups: list[AggregateGroupOut]

    @classmethod
    def of(cls, experiment_id: str, aggregate: Aggregate) -> AggregateOut:
        return cls(
            experiment_id=experiment_id,
            group_by=aggregate.group_by,
            metrics=aggregate.metrics,
            groups=[
                AggregateGroupOut(
                    key=g.key, metrics={k: MetricStatsOut(**vars(v)) for k, v in g.metrics.items()}
                )
                for g in aggregate.groups
            ],
        )


# ---------------------------------------------------------------------------------- artifacts
class ExperimentDeleted(BaseModel):
    id: str
    deleted: Literal[True] = True
    runs: int = Field(description="Runs deleted with it (their metric series too).")
    artifacts: int = Field(description="Artifact records deleted.")
    objects_to_delete: int = Field(
        description=(
            "Stored objects no record names any more (a run reused elsewhere keeps its), checkpoints "
            "included: deleted in the background after this answer."
        )
    )


class ArtifactOut(BaseModel):
    id: str
    experiment_id: str
    run_id: str | None = Field(description="null for an experiment-level artifact (comparison figures).")
    kind: str = Field(description="figure, weights, results, metrics or other")
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    download_url: str

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactOut:
        return cls(
            id=artifact.id,
            experiment_id=artifact.experiment_id,
            run_id=artifact.run_id,
            kind=artifact.kind,
            name=artifact.name,
            content_type=artifact.content_type,
            size=artifact.size,
            sha256=artifact.sha256,
            created_at=artifact.created_at,
            download_url=f"/v1/artifacts/{artifact.id}/content",
        )


class ArtifactList(BaseModel):
    items: list[ArtifactOut]
    next_cursor: str | None = Field(
        None, description="The next page's cursor (an experiment's artifacts); null on the last page."
    )


# ------------------------------------------------------------------------------------- health
class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(description="Each dependency: 'ok' or why it is not.")
