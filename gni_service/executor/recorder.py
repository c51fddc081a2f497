"""Hooks the engine calls while a batch trains: progress, metrics and cancellation, via the database.

The engine calls these from its training thread, often (``should_cancel`` once per run and step);
they only touch memory. The batch's own database thread (:class:`Heartbeat`) does the writing at a
bounded rate: buffered progress and metric rows in one transaction per ``progress_interval_s``,
a look for cancels every ``cancel_poll_interval_s``, a heartbeat every ``heartbeat_interval_s``. So
training never waits for the database, except to flush a full metrics buffer or to record a cancel.

Statements are per batch, not per run: the runs of a batch step together, so one
``UPDATE … WHERE id IN (…)`` moves all their progress (and heartbeats), the cancel poll returns only
the rows that changed, and metric rows go in one multi-row insert; a thousand-run batch costs the
database about what a one-run batch does.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import update_wrapper
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import ColumnElement, Select, and_, delete, insert, not_, or_, select, update

from gni_service.db import Database
from gni_service.executor.claims import ClaimedRun, runs_table, still_held
from gni_service.executor.retrying import is_infrastructure_error, retry_infrastructure
from gni_service.experiments import refresh_experiment
from gni_service.metrics import finite_or_none
from gni_service.models import MetricPoint, RunStatus, utcnow

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from gni_engine.execution import MetricRow

P = ParamSpec("P")
R = TypeVar("R")


def _timed(hook: Callable[Concatenate[BatchRecorder, P], R]) -> Callable[Concatenate[BatchRecorder, P], R]:
    """Adds the hook's duration to ``hook_seconds``: the bookkeeping the training thread waited for."""

    def timed(self: BatchRecorder, /, *args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.hook_seconds += time.perf_counter() - start

    update_wrapper(timed, hook)
    return timed


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
        self._write_lock = threading.Lock()  # one flush at a time: the last one waits for the others
        self._progress: dict[int, int] = {}
        self._metric_rows: list[dict[str, Any]] = []
        self._last_flush = clock()
        self._last_cancel_poll = float("-inf")
        self._cancelled: set[int] = set()
        self._asked: set[int] = set()
        self._recorded_cancels: set[int] = set()
        self._last_step: dict[int, int] = {}
        self._asking = False  # should_cancel called since the last look for cancels
        self._changed_runs = _changed_runs_query(self._runs)
        self.metric_rows_written = 0
        self.hook_seconds = 0.0

    # ------------------------------------------------------------------------------ RunHooks
    @_timed
    def on_start(self, index: int) -> None:
        with self._lock:
            self._progress.setdefault(index, 0)

    @_timed
    def on_progress(self, index: int, step: int, total: int) -> None:
        with self._lock:
            self._progress[index] = step
            self._last_step[index] = step

    @_timed
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
            self._flush_quietly()  # bounds the buffer; the database thread usually writes it first

    @_timed
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
        if run.attempt <= 1 and not rows:
            return  # the run's first claim: no earlier attempt has written rows to replace

        def replace() -> None:
            with self._database.transaction() as session:
                session.execute(delete(MetricPoint).where(MetricPoint.run_id == run.id))
                if rows:
                    session.execute(insert(MetricPoint), rows)

        retry_infrastructure(replace, budget_s=self._retry_budget_s, what=f"resetting metrics of {run.id}")
        self.metric_rows_written += len(rows)

    @_timed
    def should_cancel(self, index: int) -> bool:
        if self._stopping.is_set():
            return True
        self._asking = True
        if index not in self._cancelled:  # kept current by the database thread (write_due)
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
                    .where(still_held(run))
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
    @property
    def round_s(self) -> float:
        """How often :meth:`write_due` has something to do."""
        return min(self._cancel_poll_interval_s, self._progress_interval_s)

    def write_due(self) -> None:
        """The database thread's round: look for cancels, write buffered rows, each when it is due.

        Cancels are looked for only while the engine asks (not while it draws figures, say).
        """
        now = self._clock()
        if self._asking and now - self._last_cancel_poll >= self._cancel_poll_interval_s:
            self._last_cancel_poll = now
            self._asking = False
            self._poll_cancellations()
        if now - self._last_flush >= self._progress_interval_s:
            self._flush_quietly()

    def cancelled_by_request(self) -> set[int]:
        """Indices of the runs a user asked to stop (as opposed to the process shutting down)."""
        self._poll_cancellations()
        with self._lock:
            return set(self._cancelled)

    def _poll_cancellations(self) -> None:
        """Runs asked to stop, or no longer this attempt's (re-queued, finished elsewhere)."""
        ids = {run.id: i for i, run in enumerate(self._runs)}
        try:
            with self._database.reading() as session:
                rows = [row for row in session.execute(self._changed_runs) if row[0] in ids]
        except Exception as error:
            if not is_infrastructure_error(error):
                raise
            return  # the database is away: keep training, ask again later
        found = {ids[run_id] for run_id, _, _ in rows}
        asked = {ids[run_id] for run_id, cancel, still_held in rows if cancel and still_held}
        with self._lock:
            self._cancelled = found
            self._asked |= asked

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
            session.execute(update(runs_table).where(held_by(self._runs)).values(heartbeat_at=utcnow()))

    def flush(self) -> None:
        """Write buffered progress (and a heartbeat) and metric rows in one transaction.

        On failure the buffer is kept (newer progress wins) and the error raised; only rows of runs
        still held by this attempt are written, so a worker that lost its lease adds nothing. A
        flush waits for one in progress on another thread: when it returns, everything buffered
        before it was called is written.
        """
        with self._write_lock:
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
        at_step: dict[int, list[ClaimedRun]] = defaultdict(list)
        for i, step in progress.items():
            at_step[step].append(self._runs[i])
        with self._database.transaction() as session:
            if rows:
                held = set(session.scalars(select(runs_table.c.id).where(held_by(self._runs))))
                rows = [row for row in rows if row["run_id"] in held]
            for step, runs in at_step.items():  # one statement: a batch's runs step together
                session.execute(
                    update(runs_table).where(held_by(runs)).values(progress_step=step, heartbeat_at=now)
                )
            if rows:
                session.execute(insert(MetricPoint), rows)


def held_by(runs: Sequence[ClaimedRun]) -> ColumnElement[bool]:
    """Rows of these runs still running under the attempt that claimed them (usually one attempt)."""
    by_attempt: dict[int, list[str]] = defaultdict(list)
    for run in runs:
        by_attempt[run.attempt].append(run.id)
    return and_(
        runs_table.c.status == RunStatus.running.value,
        or_(
            *(
                and_(runs_table.c.attempt == attempt, runs_table.c.id.in_(ids))
                for attempt, ids in sorted(by_attempt.items())
            )
        ),
    )


def _changed_runs_query(runs: Sequence[ClaimedRun]) -> Select[str, bool, bool]:
    """``(id, cancel_requested, still held)`` of the runs asked to stop or no longer held.

    Only those rows come back, usually none. A batch claimed at one attempt (the usual case) is
    found by its key, one parameter, not by a thousand ids; the rows of that key this claim did not
    take (finished before it) come back too, and the caller drops them.
    """
    keys = {run.batch_key for run in runs}
    attempts = {run.attempt for run in runs}
    if len(keys) == 1 and len(attempts) == 1 and "" not in keys:
        [key], [attempt] = keys, attempts
        held = and_(runs_table.c.status == RunStatus.running.value, runs_table.c.attempt == attempt)
        among: ColumnElement[bool] = runs_table.c.batch_key == key
    else:
        held = held_by(runs)
        among = runs_table.c.id.in_([run.id for run in runs])
    cancel = runs_table.c.cancel_requested
    return select(runs_table.c.id, cancel, held).where(among, or_(cancel.is_(True), not_(held)))


class Heartbeat:
    """The batch's database thread, alive while the batch trains and its outcomes are recorded.

    Every round it calls ``recorder.write_due()`` (cancels looked for, buffered progress and metrics
    written, each at its own interval) and every ``interval_s`` ``recorder.heartbeat()``, which marks
    the runs alive also while nothing else is written (figures drawn, artifacts uploaded).
    """

    def __init__(self, recorder: BatchRecorder, interval_s: float) -> None:
        self._recorder = recorder
        self._interval_s = interval_s
        self._done = threading.Event()
        # In a copy of the starter's context: the batch's log ids follow onto this thread's lines.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._beat,), name="gni-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        round_s = min(self._interval_s, self._recorder.round_s)
        next_beat = time.monotonic() + self._interval_s
        while True:
            try:
                self._recorder.write_due()
            except Exception:
                # Not an outage (those are retried quietly): the training thread's last flush, or
                # its cancel check, meets the same error and fails the batch with it.
                log.exception("recording progress failed")
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._interval_s
                try:
                    self._recorder.heartbeat()
                except Exception:
                    # A missed beat is harmless; the next one (or the outcome) follows.
                    log.warning("heartbeat failed", exc_info=True)
            if self._done.wait(round_s):
                return
