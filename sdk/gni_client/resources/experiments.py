"""``client.experiments``: create (or dry-run) a sweep or a preset, read, list, cancel, wait, aggregate."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload

from gni_client._base_client import NOT_GIVEN, RequestOptions, Timeout, _NotGiven, new_idempotency_key
from gni_client._exceptions import WaitTimeoutError
from gni_client._progress import ProgressBar
from gni_client.pagination import AsyncCursorPage, AsyncPaginator, SyncCursorPage
from gni_client.resources._paths import experiment_path, join_list
from gni_client.spec import check_experiment, with_values
from gni_client.types import Aggregate, Experiment, ExperimentDeleted, ExperimentPlan, RunStatus

if TYPE_CHECKING:
    from gni_client._client import AsyncClient, Client

__all__ = ["AsyncExperiments", "Experiments"]

DEFAULT_POLL_INTERVAL = 1.0


def _axis_values(path: str, values: Any) -> list[Any]:
    """An axis's values as a list; a bare value or a string is a mistake, named here.

    >>> _axis_values("noise.sigma", (0.0, 0.1))
    [0.0, 0.1]
    >>> _axis_values("noise.sigma", 0.1)
    Traceback (most recent call last):
    ...
    ValueError: axis 'noise.sigma': expected a list of values, got 0.1
    """
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence | set | frozenset):
        raise ValueError(f"axis {path!r}: expected a list of values, got {values!r}")
    return list(values)


def create_options(
    *,
    spec: Mapping[str, Any] | None,
    preset: str | None,
    overrides: Mapping[str, Any] | None,
    sweep: Mapping[str, Sequence[Any]] | None,
    name: str | None,
    dry_run: bool,
    validate: bool,
    idempotency_key: str | None,
    timeout: Timeout | _NotGiven,
    reuse_results: bool = False,
    run_figures: bool = True,
) -> RequestOptions:
    """The ``POST /v1/experiments`` request (checked first, unless ``validate`` is false)."""
    if (spec is None) == (preset is None):
        raise ValueError("give either spec= or preset=")
    body: dict[str, Any] = {"name": name} if name is not None else {}
    if reuse_results:
        body["reuse_results"] = True
    if not run_figures:
        body["run_figures"] = False
    if preset is not None:
        body["preset"] = preset
        preset_overrides = dict(overrides or {})
        if sweep:
            # A preset's extra axes travel in its overrides (top-level axes go with base only).
            preset_axes: dict[str, list[Any]] = {**(preset_overrides.get("axes") or {})}
            preset_axes.update({path: _axis_values(path, values) for path, values in sweep.items()})
            preset_overrides["axes"] = preset_axes
        if preset_overrides:
            body["overrides"] = preset_overrides
    else:
        assert spec is not None
        is_sweep = "base" in spec or "axes" in spec
        base: Mapping[str, Any] = spec.get("base", {}) if is_sweep else spec
        axes: dict[str, list[Any]] = (
            {p: _axis_values(p, v) for p, v in (spec.get("axes") or {}).items()} if is_sweep else {}
        )
        axes.update({path: _axis_values(path, values) for path, values in (sweep or {}).items()})
        if overrides:
            base = with_values(base, overrides)
        if validate:
            check_experiment(base, axes)
        body.update(base=dict(base), axes=axes)
    return RequestOptions(
        "POST",
        "/v1/experiments",
        params={"dry_run": "true"} if dry_run else None,
        json=body,
        idempotency_key=idempotency_key or new_idempotency_key(),
        timeout=timeout,
    )


def list_options(
    *,
    status: RunStatus | None,
    name: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int | None,
    cursor: str | None,
) -> RequestOptions:
    params = {
        "status": status,
        "name": name,
        "created_after": created_after.isoformat() if created_after else None,
        "created_before": created_before.isoformat() if created_before else None,
        "limit": limit,
        "cursor": cursor,
    }
    return RequestOptions("GET", "/v1/experiments", params=params)


def aggregate_options(
    experiment_id: str,
    *,
    group_by: str | Sequence[str] | None,
    metric: str | Sequence[str],
    status: RunStatus | Sequence[RunStatus] | None,
    filter: str | Sequence[str] | None,  # noqa: A002 - the API's name
) -> RequestOptions:
    params = {
        "group_by": join_list(group_by),
        "metric": join_list(metric),
        "status": [status] if isinstance(status, str) else list(status) if status else None,
        "filter": [filter] if isinstance(filter, str) else list(filter) if filter else None,
    }
    return RequestOptions("GET", experiment_path(experiment_id, "aggregate"), params=params)


def _experiment_or_plan(data: Any) -> Experiment | ExperimentPlan:
    return ExperimentPlan.from_dict(data) if data.get("dry_run") else Experiment.from_dict(data)


def _settled(experiment: Experiment, figures: bool) -> bool:
    """Every run finished and, with ``figures``, the comparison figures drawn (or failed) where due.

    The service draws an experiment's comparison figures after its last run finishes (when one
    succeeded); until then ``figures_state`` is ``pending`` or ``drawing``.
    """
    if not experiment.finished:
        return False
    due = figures and experiment.counts.succeeded > 0
    return not (due and experiment.figures_state in ("pending", "drawing"))


class Experiments:
    """Experiments of a :class:`~gni_client.Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        name: str | None = None,
        dry_run: Literal[False] = False,
        reuse_results: bool = False,
        run_figures: bool = True,
        validate: bool = True,
        idempotency_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
    ) -> Experiment: ...

    @overload
    def create(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        name: str | None = None,
        dry_run: Literal[True],
        reuse_results: bool = False,
        run_figures: bool = True,
        validate: bool = True,
        idempotency_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
    ) -> ExperimentPlan: ...

    def create(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        name: str | None = None,
        dry_run: bool = False,
        reuse_results: bool = False,
        run_figures: bool = True,
        validate: bool = True,
        idempotency_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
    ) -> Experiment | ExperimentPlan:
        """Submit a sweep: a run ``spec`` (or a ``{"base", "axes"}`` sweep) plus ``sweep`` axes, or a
        ``preset`` by name.

        ``overrides`` sets dotted fields of ``spec`` (``{"training.steps": 50}``), or is the preset's
        overrides (``{"steps": 50, "seeds": 2}``). The spec is checked on the client first (raising
        :class:`~gni_client.SpecValidationError`, nothing sent) unless ``validate=False``. One
        ``Idempotency-Key`` (``idempotency_key`` or a fresh one) goes with every retry of this call.
        ``dry_run=True`` answers the expansion (an :class:`ExperimentPlan`) and stores nothing.
        ``reuse_results=True`` gives each run whose spec you already trained to success (same engine
        version) that run's results instead of training it again (its ``reused_from`` names the run).
        ``run_figures=False`` trains the runs without their own figures (1-3 s of a CPU core a run;
        numbers and weights only); the experiment's comparison figures are drawn either way.
        """
        options = create_options(
            spec=spec,
            preset=preset,
            overrides=overrides,
            sweep=sweep,
            name=name,
            dry_run=dry_run,
            validate=validate,
            idempotency_key=idempotency_key,
            timeout=timeout,
            reuse_results=reuse_results,
            run_figures=run_figures,
        )
        return _experiment_or_plan(self._client.request(options))

    def get(self, experiment_id: str) -> Experiment:
        """One experiment with its counts by status, progress and summary."""
        return Experiment.from_dict(
            self._client.request(RequestOptions("GET", experiment_path(experiment_id)))
        )

    def list(
        self,
        *,
        status: RunStatus | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
    ) -> SyncCursorPage[Experiment]:
        """Experiments, newest first; iterate the page for all of them."""

        def fetch(cursor: str | None) -> SyncCursorPage[Experiment]:
            options = list_options(
                status=status,
                name=name,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
            data = self._client.request(options)
            items = [Experiment.from_dict(item) for item in data["items"]]
            return SyncCursorPage(items, data.get("next_cursor"), fetch)

        return fetch(None)

    def cancel(self, experiment_id: str) -> Experiment:
        """Cancel queued runs now and running ones between two steps (cancelling twice is harmless)."""
        options = RequestOptions(
            "POST", experiment_path(experiment_id, "cancel"), idempotency_key=new_idempotency_key()
        )
        data = self._client.request(options)
        return Experiment.from_dict(data)

    def delete(self, experiment_id: str) -> ExperimentDeleted:
        """Delete a finished experiment: its runs, metric series and artifacts (objects a run reused
        elsewhere still names stay). One still queued or running is a ConflictError: cancel it first."""
        options = RequestOptions("DELETE", experiment_path(experiment_id))
        return ExperimentDeleted.from_dict(self._client.request(options))

    def wait(
        self,
        experiment_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        progress: bool = True,
        figures: bool = True,
    ) -> Experiment:
        """Poll until every run has finished and, with ``figures`` (default), the experiment's
        comparison figures are stored, so that a download right after finds them; returns the
        experiment (check its ``status`` and ``figures_state``).

        A progress bar over all training steps is shown in a terminal or a notebook (when tqdm is
        installed and ``progress`` is true). Raises :class:`~gni_client.WaitTimeoutError` after
        ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with ProgressBar(enabled=progress) as bar:
            while True:
                experiment = self.get(experiment_id)
                bar.update(experiment)
                if _settled(experiment, figures):
                    return experiment
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(experiment_id, timeout or 0.0, experiment.status)
                pause = poll_interval if deadline is None else min(poll_interval, deadline - time.monotonic())
                time.sleep(max(pause, 0.0))

    def aggregate(
        self,
        experiment_id: str,
        *,
        metric: str | Sequence[str],
        group_by: str | Sequence[str] | None = None,
        status: RunStatus | Sequence[RunStatus] | None = None,
        filter: str | Sequence[str] | None = None,  # noqa: A002 - the API's name
    ) -> Aggregate:
        """Mean, std, stderr and n of ``metric`` (``summary.test_loss``) per group of ``group_by`` paths."""
        options = aggregate_options(
            experiment_id, group_by=group_by, metric=metric, status=status, filter=filter
        )
        return Aggregate.from_dict(self._client.request(options))


class AsyncExperiments:
    """Experiments of an :class:`~gni_client.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        name: str | None = None,
        dry_run: Literal[False] = False,
        reuse_results: bool = False,
        run_figures: bool = True,
        validate: bool = True,
        idempotency_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
    ) -> Experiment: ...

    @overload
    async def create(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        name: str | None = None,
        dry_run: Literal[True],
        reuse_results: bool = False,
        run_figures: bool = True,
        validate: bool = True,
        idempotency_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
    ) -> ExperimentPlan: ...

    async def create(
        self,
        *,
        spec: Mapping[str, Any] | None = None,
        preset: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        name: str | None = None,
        dry_run: bool = False,
        reuse_results: bool = False,
        run_figures: bool = True,
        validate: bool = True,
        idempotency_key: str | None = None,
        timeout: Timeout | _NotGiven = NOT_GIVEN,
    ) -> Experiment | ExperimentPlan:
        """As :meth:`Experiments.create`."""
        options = create_options(
            spec=spec,
            preset=preset,
            overrides=overrides,
            sweep=sweep,
            name=name,
            dry_run=dry_run,
            validate=validate,
            idempotency_key=idempotency_key,
            timeout=timeout,
            reuse_results=reuse_results,
            run_figures=run_figures,
        )
        return _experiment_or_plan(await self._client.request(options))

    async def get(self, experiment_id: str) -> Experiment:
        data = await self._client.request(RequestOptions("GET", experiment_path(experiment_id)))
        return Experiment.from_dict(data)

    def list(
        self,
        *,
        status: RunStatus | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
    ) -> AsyncPaginator[Experiment]:
        """``await`` for the first page, or ``async for`` every experiment, newest first."""

        async def fetch(cursor: str | None) -> AsyncCursorPage[Experiment]:
            options = list_options(
                status=status,
                name=name,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
            data = await self._client.request(options)
            items = [Experiment.from_dict(item) for item in data["items"]]
            return AsyncCursorPage(items, data.get("next_cursor"), fetch)

        return AsyncPaginator(lambda: fetch(None))

    async def cancel(self, experiment_id: str) -> Experiment:
        options = RequestOptions(
            "POST", experiment_path(experiment_id, "cancel"), idempotency_key=new_idempotency_key()
        )
        data = await self._client.request(options)
        return Experiment.from_dict(data)

    async def delete(self, experiment_id: str) -> ExperimentDeleted:
        options = RequestOptions("DELETE", experiment_path(experiment_id))
        return ExperimentDeleted.from_dict(await self._client.request(options))

    async def wait(
        self,
        experiment_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        progress: bool = True,
        figures: bool = True,
    ) -> Experiment:
        """As :meth:`Experiments.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with ProgressBar(enabled=progress) as bar:
            while True:
                experiment = await self.get(experiment_id)
                bar.update(experiment)
                if _settled(experiment, figures):
                    return experiment
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(experiment_id, timeout or 0.0, experiment.status)
                pause = poll_interval if deadline is None else min(poll_interval, deadline - time.monotonic())
                await self._client._sleep(max(pause, 0.0))

    async def aggregate(
        self,
        experiment_id: str,
        *,
        metric: str | Sequence[str],
        group_by: str | Sequence[str] | None = None,
        status: RunStatus | Sequence[RunStatus] | None = None,
        filter: str | Sequence[str] | None = None,  # noqa: A002 - the API's name
    ) -> Aggregate:
        options = aggregate_options(
            experiment_id, group_by=group_by, metric=metric, status=status, filter=filter
        )
        return Aggregate.from_dict(await self._client.request(options))
