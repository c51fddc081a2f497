"""Hooks the engine calls while a batch trains: progress, metrics and cancellation, via the database.

The engine calls these from its training thread, often; the recorder buffers and writes at a
bounded rate (one transaction per ``progress_interval_s``, or sooner when many metric rows wait),
and checks for cancellation at most every ``cancel_poll_interval_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, insert, or_, select, update

from gni_service.db import Database
from gni_service.executor.claims import ClaimedRun, runs_table
from gni_service.executor.retrying import is_infrastructure_error, retry_infrastructure
from gni_service.experiments import refresh_experiment
from gni_service.metrics import finite_or_none
from gni_service.models import MetricPoint, Run, RunStatus, utcnow

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from gni_engine.execution import MetricRow


class BatchRecorder:
    """Implements the engine's ``RunHooks`` for one claimed batch (``index`` = position in the batch)."""

    def __init__(
        self,
        database: Database,
        runs: Sequence[ClaimedRun],
        *,
        progress_interval_s: float,
        cancel_poll_interval_s: float,
        metrics_flush_rows: int,
        stopping: threading.Event,
        retry_budget_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._runs = list(runs)
        self._progress_interval_s = progress_interval_s
        self._cancel_poll_interval_s = cancel_poll_interval_s
        self._metrics_flush_rows = metrics_flush_rows
        self._stopping = stopping
        self._retry_budget_s = retry_budget_s
        self._clock = clock
        self._lock = threading.Lock()
        self._progress: dict[int, int] = {}
        self._metric_rows: list[dict[str, Any]] = []
        self._last_flush = clock()
        self._last_cancel_poll = float("-inf")
        self._cancelled: set[int] = set()
        self._asked: set[int] = set()
        self._recorded_cancels: set[int] = set()
        self._last_step: dict[int, int] = {}
        self.metric_rows_written = 0

    # ------------------------------------------------------------------------------ RunHooks
    def on_start(self, index: int) -> None:
        with self._lock:
            self._progress.setdefault(index, 0)

    def on_progress(self, index: int, step: int, total: int) -> None:
        with self._lock:
            self._progress[index] = step
            self._last_step[index] = step
        self._flush_if_due()

    def on_metrics(self, index: int, rows: Sequence[MetricRow]) -> None:
        run_id = self._runs[index].id
        batch = [
            {"run_id": run_id, "name": row.name, "step": int(row.step), "value": finite_or_none(row.value)}
            for row in rows
        ]
        with self._lock:
            self._metric_rows.extend(batch)
            full = len(self._metric_rows) >= self._metrics_flush_rows
        if full:
            self._flush_quietly()
        else:
            self._flush_if_due()

    def restart_metrics(self, index: int, checkpoint: dict[str, Any] | None) -> None:
        """Make the run's stored series what its starting point says: empty, or the checkpoint's.

        A re-queued run's earlier attempt may have written rows past its last checkpoint (or, when
        it starts from scratch, any rows): they are replaced, so that no point is stored twice.
        """
        run = self._runs[index]
        rows = [
            {"run_id": run.id, "name": str(name), "step": int(step), "value": finite_or_none(float(value))}
            for step, name, value in (checkpoint or {}).get("metrics", [])
        ]

        def replace() -> None:
            with self._database.transaction() as session:
                session.execute(delete(MetricPoint).where(MetricPoint.run_id == run.id))
                if rows:
                    session.execute(insert(MetricPoint), rows)

        retry_infrastructure(replace, budget_s=self._retry_budget_s, what=f"resetting metrics of {run.id}")
        self.metric_rows_written += len(rows)

    def should_cancel(self, index: int) -> bool:
        if self._stopping.is_set():
            return True
        now = self._clock()
        if now - self._last_cancel_poll >= self._cancel_poll_interval_s:
            self._last_cancel_poll = now
            self._poll_cancellations()
        if index not in self._cancelled:
            return False
        if index in self._asked and index not in self._recorded_cancels:
            self._record_cancel(index)
        return True

    def _record_cancel(self, index: int) -> None:
        """Mark a run cancelled as it stops, not when its batch-mates finish (best effort)."""
        run = self._runs[index]
        step = self._last_step.get(index, 0)
        try:
            with self._database.transaction() as session:
                session.execute(
                    update(runs_table)
                    .where(
                        runs_table.c.id == run.id,
                        runs_table.c.attempt == run.attempt,
                        runs_table.c.status == RunStatus.running.value,
                    )
                    .values(
                        status=RunStatus.cancelled.value,
                        finished_at=utcnow(),
                        progress_step=step,
                        error=f"cancelled at step {step}",
                    )
                )
                refresh_experiment(session, run.experiment_id)
        except Exception as error:
            if not is_infrastructure_error(error):
                raise
            return  # recorded with the batch's outcomes instead
        self._recorded_cancels.add(index)

    # ------------------------------------------------------------------------------- writing
    def cancelled_by_request(self) -> set[int]:
        """Indices of the runs a user asked to stop (as opposed to the process shutting down)."""
        self._poll_cancellations()
        with self._lock:
            return set(self._cancelled)

    def _poll_cancellations(self) -> None:
        """Runs asked to stop, or no longer this attempt's (re-queued, finished elsewhere)."""
        attempts = {run.id: run.attempt for run in self._runs}
        ids = {run.id: i for i, run in enumerate(self._runs)}
        statement = select(Run.id, Run.attempt, Run.status, Run.cancel_requested).where(Run.id.in_(list(ids)))
        try:
            with self._database.reading() as session:
                rows = session.execute(statement).all()
        except Exception as error:
            if not is_infrastructure_error(error):
                raise
            return  # the database is away: keep training, ask again later
        found = {
            ids[run_id]
            for run_id, attempt, status, cancel in rows
            if cancel or status != RunStatus.running or attempt != attempts[run_id]
        }
        asked = {
            ids[run_id]
            for run_id, attempt, status, cancel in rows
            if cancel and status == RunStatus.running and attempt == attempts[run_id]
        }
        with self._lock:
            self._cancelled = found
            self._asked |= asked

    def _flush_if_due(self) -> None:
        if self._clock() - self._last_flush >= self._progress_interval_s:
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as error:
            if not is_infrastructure_error(error):
                raise
            # The rows wait in the buffer; training goes on and the next flush tries again.
            log.warning("could not record progress (%s); will retry", type(error).__name__)

    def heartbeat(self) -> None:
        """Mark the batch's runs alive (also between progress reports, e.g. while figures are drawn)."""
        with self._database.transaction() as session:
            session.execute(
                update(runs_table)
                .where(
                    runs_table.c.id == bindparam("run_id"),
                    runs_table.c.attempt == bindparam("run_attempt"),
                    runs_table.c.status == RunStatus.running.value,
                )
                .values(heartbeat_at=utcnow()),
                [{"run_id": run.id, "run_attempt": run.attempt} for run in self._runs],
            )

    def flush(self) -> None:
        """Write buffered progress (and a heartbeat) and metric rows in one transaction.

        On failure the buffer is kept (newer progress wins) and the error raised; only rows of runs
        still held by this attempt are written, so a worker that lost its lease adds nothing.
        """
        with self._lock:
            progress, self._progress = self._progress, {}
            rows, self._metric_rows = self._metric_rows, []
            self._last_flush = self._clock()
        if not progress and not rows:
            return
        try:
            self._write(progress, rows)
        except BaseException:
            with self._lock:
                self._progress = {**progress, **self._progress}
                self._metric_rows = rows + self._metric_rows
            raise
        self.metric_rows_written += len(rows)

    def _write(self, progress: dict[int, int], rows: list[dict[str, Any]]) -> None:
        now = utcnow()
        with self._database.transaction() as session:
            if rows:
                held = set(
                    session.scalars(
                        select(Run.id).where(
                            or_(*((Run.id == run.id) & (Run.attempt == run.attempt) for run in self._runs)),
                            Run.status == RunStatus.running,
                        )
                    )
                )
                rows = [row for row in rows if row["run_id"] in held]
            if progress:
                session.execute(
                    update(runs_table)
                    .where(
                        runs_table.c.id == bindparam("run_id"),
                        runs_table.c.attempt == bindparam("run_attempt"),
                        runs_table.c.status == RunStatus.running.value,
                    )
                    .values(progress_step=bindparam("step"), heartbeat_at=now),
                    [
                        {"run_id": self._runs[i].id, "run_attempt": self._runs[i].attempt, "step": step}
                        for i, step in progress.items()
                    ],
                )
            if rows:
                session.execute(insert(MetricPoint), rows)


class Heartbeat:
    """Calls ``recorder.heartbeat()`` every ``interval_s`` on its own thread while the batch trains."""

    def __init__(self, recorder: BatchRecorder, interval_s: float) -> None:
        self._recorder = recorder
        self._interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gni-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self._interval_s):
            try:
                self._recorder.heartbeat()
            except Exception:
                # A missed beat is harmless; the next one (or the outcome) follows.
                log.warning("heartbeat failed", exc_info=True)
