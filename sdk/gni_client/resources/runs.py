"""``client.runs``: an experiment's runs (filtered, sorted), one run, its metric series, cancelling one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gni_client._base_client import RequestOptions, new_idempotency_key
from gni_client.pagination import AsyncCursorPage, AsyncPaginator, SyncCursorPage
from gni_client.resources._paths import as_list, experiment_path, join_list, run_path
from gni_client.types import Run, RunMetrics, RunStatus

if TYPE_CHECKING:
    from gni_client._client import AsyncClient, Client

__all__ = ["AsyncRuns", "Runs"]


def list_options(
    experiment_id: str,
    *,
    filter: str | Sequence[str] | None,  # noqa: A002 - the API's name
    status: RunStatus | Sequence[RunStatus] | None,
    sort: str | None,
    limit: int | None,
    cursor: str | None,
) -> RequestOptions:
    params = {
        "filter": as_list(filter),
        "status": as_list(status),
        "sort": sort,
        "limit": limit,
        "cursor": cursor,
    }
    return RequestOptions("GET", experiment_path(experiment_id, "runs"), params=params)


def metrics_options(
    run_id: str,
    *,
    names: str | Sequence[str] | None,
    from_step: int | None,
    to_step: int | None,
    max_points: int | None,
) -> RequestOptions:
    params = {"names": join_list(names), "from": from_step, "to": to_step, "max_points": max_points}
    return RequestOptions("GET", run_path(run_id, "metrics"), params=params)


class Runs:
    """Runs of a :class:`~gni_client.Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(
        self,
        experiment_id: str,
        *,
        filter: str | Sequence[str] | None = None,  # noqa: A002 - the API's name
        status: RunStatus | Sequence[RunStatus] | None = None,
        sort: str | None = None,
        limit: int | None = None,
    ) -> SyncCursorPage[Run]:
        """The experiment's runs: ``filter`` takes ``PATH OP VALUE`` expressions (``"noise.sigma=0.1"``,
        ``"summary.ece<0.05"``; several combine with AND), ``sort`` a path (``"-summary.test_loss"``).
        Iterate the page for every run; ``.to_pandas()`` gives one row per run."""

        def fetch(cursor: str | None) -> SyncCursorPage[Run]:
            options = list_options(
                experiment_id, filter=filter, status=status, sort=sort, limit=limit, cursor=cursor
            )
            data = self._client.request(options)
            return SyncCursorPage([Run.from_dict(r) for r in data["items"]], data.get("next_cursor"), fetch)

        return fetch(None)

    def get(self, run_id: str) -> Run:
        return Run.from_dict(self._client.request(RequestOptions("GET", run_path(run_id))))

    def metrics(
        self,
        run_id: str,
        *,
        names: str | Sequence[str] | None = None,
        from_step: int | None = None,
        to_step: int | None = None,
        max_points: int | None = None,
    ) -> RunMetrics:
        """The run's metric series (all, or ``names``), downsampled by the server to ``max_points``."""
        options = metrics_options(
            run_id, names=names, from_step=from_step, to_step=to_step, max_points=max_points
        )
        return RunMetrics.from_dict(self._client.request(options))

    def cancel(self, run_id: str) -> Run:
        options = RequestOptions("POST", run_path(run_id, "cancel"), idempotency_key=new_idempotency_key())
        return Run.from_dict(self._client.request(options))


class AsyncRuns:
    """Runs of an :class:`~gni_client.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def list(
        self,
        experiment_id: str,
        *,
        filter: str | Sequence[str] | None = None,  # noqa: A002 - the API's name
        status: RunStatus | Sequence[RunStatus] | None = None,
        sort: str | None = None,
        limit: int | None = None,
    ) -> AsyncPaginator[Run]:
        """As :meth:`Runs.list`: ``await`` for the first page or ``async for`` every run."""

        async def fetch(cursor: str | None) -> AsyncCursorPage[Run]:
            options = list_options(
                experiment_id, filter=filter, status=status, sort=sort, limit=limit, cursor=cursor
            )
            data = await self._client.request(options)
            return AsyncCursorPage([Run.from_dict(r) for r in data["items"]], data.get("next_cursor"), fetch)

        return AsyncPaginator(lambda: fetch(None))

    async def get(self, run_id: str) -> Run:
        return Run.from_dict(await self._client.request(RequestOptions("GET", run_path(run_id))))

    async def metrics(
        self,
        run_id: str,
        *,
        names: str | Sequence[str] | None = None,
        from_step: int | None = None,
        to_step: int | None = None,
        max_points: int | None = None,
    ) -> RunMetrics:
        options = metrics_options(
            run_id, names=names, from_step=from_step, to_step=to_step, max_points=max_points
        )
        return RunMetrics.from_dict(await self._client.request(options))

    async def cancel(self, run_id: str) -> Run:
        options = RequestOptions("POST", run_path(run_id, "cancel"), idempotency_key=new_idempotency_key())
        return Run.from_dict(await self._client.request(options))
