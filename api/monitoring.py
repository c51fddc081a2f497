"""Operations: request ids, request timing, and the Prometheus metrics served at ``/metrics``.

Every app has its own :class:`~prometheus_client.CollectorRegistry` (several apps can live in one
process, as in the tests). Run gauges are read from the database when Prometheus scrapes, so they
are right whichever process (API or worker) changed the runs:

- ``gni_runs{status}``: runs by status; ``gni_queue_depth``: queued runs;
- ``gni_run_heartbeat_age_seconds``: the oldest heartbeat of a running run (a stuck worker shows);
- ``gni_run_duration_seconds``: wall time of the runs finished in the last 24 hours;
- ``gni_http_request_duration_seconds{method,route,status}``: this process's requests;
- ``gni_database_up``: 0 when the scrape could not read the database.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gni_service.db import Database
from gni_service.models import Run, RunStatus, utcnow
from gni_service.structured_logging import log_context

access_log = logging.getLogger("api.access")
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_IDS_IN_PATH = {
    "experiment_id": re.compile(r"/experiments/(exp_[A-Za-z0-9]+)"),
    "run_id": re.compile(r"/runs/(run_[A-Za-z0-9]+)"),
}
RUN_DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
RECENT_RUNS = 10_000


class RunCollector(Collector):
    """Run gauges and durations, read from the database at each scrape."""

    def __init__(self, database: Callable[[], Database]) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("gni_database_up", "1 when this scrape could read the database.")
        try:
            metrics = list(self._read())
        except Exception:  # a scrape must not fail: report the database as down instead
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from metrics

    def _read(self) -> Iterator[Metric]:
        now = utcnow()
        with self.database().reading() as session:
            counts = dict.fromkeys(RunStatus, 0)
            for status, count in session.execute(select(Run.status, func.count()).group_by(Run.status)):
                counts[RunStatus(status)] = int(count)
            oldest = session.scalar(
                select(func.min(func.coalesce(Run.heartbeat_at, Run.started_at))).where(
                    Run.status == RunStatus.running
                )
            )
            finished = session.execute(
                select(Run.started_at, Run.finished_at)
                .where(Run.finished_at >= now - timedelta(days=1), Run.started_at.is_not(None))
                .order_by(Run.finished_at.desc())
                .limit(RECENT_RUNS)
            ).all()
        runs = GaugeMetricFamily("gni_runs", "Runs by status.", labels=["status"])
        for status, count in counts.items():
            runs.add_metric([status.value], float(count))
        yield runs
        yield GaugeMetricFamily(
            "gni_queue_depth", "Runs queued and not yet claimed.", value=float(counts[RunStatus.queued])
        )
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "gni_run_heartbeat_age_seconds",
            "Age of the oldest heartbeat among running runs (0 when none runs).",
            value=max(0.0, age),
        )
        durations = [(end - start).total_seconds() for start, end in finished if start and end]
        buckets = [(str(le), float(sum(d <= le for d in durations))) for le in RUN_DURATION_BUCKETS]
        buckets.append(("+Inf", float(len(durations))))
        yield HistogramMetricFamily(
            "gni_run_duration_seconds",
            "Wall time of the runs finished in the last 24 hours.",
            buckets=buckets,
            sum_value=float(sum(durations)),
        )


def build_registry(database: Callable[[], Database]) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunCollector(database))
    requests = Histogram(
        "gni_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template.",
        ["method", "route", "status"],
        registry=registry,
    )
    return registry, requests


def route_template(scope: Scope) -> str:
    """``/v1/runs/{run_id}`` for ``/v1/runs/run_1``: one label per route, never per id.

    >>> route_template({"route": object(), "path": "/v1/runs/runs", "path_params": {"run_id": "runs"}})
    '/v1/runs/{run_id}'
    >>> route_template({"path": "/nothing/here"})
    'unmatched'
    """
    if scope.get("route") is None:
        return "unmatched"
    segments = str(scope.get("path", "")).split("/")
    for name, value in reversed(list((scope.get("path_params") or {}).items())):
        for i in range(len(segments) - 1, -1, -1):
            if segments[i] == str(value):
                segments[i] = "{" + name + "}"
                break
    return "/".join(segments)


class RequestContextMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` when sane), logs under it, times it."""

    def __init__(self, app: ASGIApp, requests: Histogram) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        path = str(scope.get("path", ""))
        ids = {name: match.group(1) for name, p in _IDS_IN_PATH.items() if (match := p.search(path))}
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with log_context(request_id=request_id, **ids):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                template = route_template(scope)
                method = str(scope.get("method", "-"))
                self.requests.labels(method, template, str(status)).observe(elapsed)
                # The route template, not the path: ids are in the context fields, queries never logged.
                access_log.info("%s %s %d %.1f ms", method, template, status, elapsed * 1000)
