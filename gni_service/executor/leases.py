"""Leases on running runs, and the reaper that takes back the expired ones.

A claimed run holds a lease as long as its executor writes ``heartbeat_at`` (every
``heartbeat_interval_s``). :class:`LeaseReaper` — a thread of the API process, in both executor
modes — looks every ``reaper_interval_s`` for running runs whose heartbeat is older than
``lease_timeout_s``: each goes back to the queue (and its batch is announced again), or, when it
has already been claimed ``max_attempts`` times, fails with the reason. The broker's redelivery is
not relied on: with Redis, an unacknowledged message comes back only after the visibility timeout.

The reaper also announces again batches whose messages may be gone: every queued batch when the
broker reports it lost its data (see :class:`~gni_service.executor.celery_executor.CeleryExecutor`),
and any batch queued for ``requeue_queued_after_s`` without being claimed. Announcing a batch
twice is harmless: the claim is a conditional update, so it trains once.

Every change is a conditional update on ``(id, attempt, status, heartbeat_at)``, so several API
processes may reap at once. A reaper judges leases only once it has reached the database for a
whole lease: after an outage, workers get that long to heartbeat again before being declared lost.

Given the artifact store, the reaper also draws the comparison figures of finished experiments
that lack them (their drawer died, or no worker ran: every run was reused), on a thread of its
own so that a long drawing never delays the leases; see
:mod:`~gni_service.executor.experiment_figures` for the claim that keeps it to one drawer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gni_service.db import Database
from gni_service.executor.claims import runs_table
from gni_service.executor.experiment_figures import (
    abandoned_figures,
    experiments_missing_figures,
    give_up_abandoned_figures,
    store_experiment_figures,
)
from gni_service.experiments import refresh_experiment
from gni_service.idempotency import prune_responses
from gni_service.models import Run, RunStatus, utcnow
from gni_service.settings import ServiceSettings
from gni_service.storage import ArtifactStore

log = logging.getLogger(__name__)
# A batch still queued is announced again after requeue_queued_after_s, then after twice that, …,
# at most 2**MAX_REANNOUNCE_DOUBLINGS times it: a backlog of hours gets a few copies, not dozens.
MAX_REANNOUNCE_DOUBLINGS = 4
PRUNE_INTERVAL_S = 600.0  # how often a reaper deletes expired Idempotency-Key answers
LOGGED_IDS = 20  # run ids a log line names (the count says how many there were)


def _some(ids: Sequence[str]) -> str:
    """``[a, b, c]``, or the first :data:`LOGGED_IDS` and how many more."""
    shown = ", ".join(ids[:LOGGED_IDS])
    return f"[{shown}{f', … {len(ids) - LOGGED_IDS} more' if len(ids) > LOGGED_IDS else ''}]"


@dataclass
class ReapReport:
    """What one pass over expired leases did."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    batch_keys: set[str] = field(default_factory=set)


def expire_leases(
    session: Session, *, lease_timeout_s: float, max_attempts: int, now: datetime | None = None
) -> ReapReport:
    """Re-queue (or fail, past ``max_attempts``) running runs whose heartbeat is too old."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=lease_timeout_s)
    expired = session.execute(
        select(Run.id, Run.attempt, Run.batch_key, Run.experiment_id, Run.cancel_requested, Run.heartbeat_at)
        .where(Run.status == RunStatus.running)
        .where((Run.heartbeat_at < cutoff) | Run.heartbeat_at.is_(None))
    ).all()
    report = ReapReport()
    experiments: set[str] = set()
    for run_id, attempt, batch_key, experiment_id, cancel_requested, heartbeat_at in expired:
        last = "never" if heartbeat_at is None else heartbeat_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        lost = (
            f"its executor stopped heartbeating (last heartbeat {last}, attempt {attempt} of {max_attempts})"
        )
        if cancel_requested:
            values = {"status": RunStatus.cancelled.value, "finished_at": now, "error": f"cancelled: {lost}"}
            bucket = report.cancelled
        elif attempt >= max_attempts:
            values = {"status": RunStatus.failed.value, "finished_at": now, "error": f"failed: {lost}"}
            bucket = report.failed
        else:
            values = {
                "status": RunStatus.queued.value,
                "queued_at": now,
                "progress_step": 0,
                "heartbeat_at": None,
                "started_at": None,
                "error": f"re-queued: {lost}",
            }
            bucket = report.requeued
        result = session.execute(
            update(runs_table)
            .where(
                runs_table.c.id == run_id,
                runs_table.c.attempt == attempt,
                runs_table.c.status == RunStatus.running.value,
                (runs_table.c.heartbeat_at < cutoff) | runs_table.c.heartbeat_at.is_(None),
            )
            .values(**values)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            bucket.append(run_id)
            experiments.add(experiment_id)
            if bucket is report.requeued:
                report.batch_keys.add(batch_key)
    for experiment_id in sorted(experiments):
        refresh_experiment(session, experiment_id)
    return report


def queued_batches(session: Session, *, queued_before: datetime | None = None) -> list[str]:
    """Keys of batches with queued runs (only those waiting since before ``queued_before``)."""
    statement = select(Run.batch_key).where(Run.status == RunStatus.queued).group_by(Run.batch_key)
    if queued_before is not None:
        statement = statement.having(func.min(Run.queued_at) < queued_before)
    return list(session.scalars(statement.order_by(func.min(Run.queued_at))))


class LeaseReaper:
    """A daemon thread running :func:`expire_leases` and the re-announcements on a schedule.

    ``announce`` gets the batch keys to send again (the executor's ``enqueue``);
    ``broker_was_reset`` (optional) says whether the broker lost its messages since last asked;
    with ``store``, missing experiment figures are drawn too (:meth:`redraw_figures`).
    """

    def __init__(
        self,
        database: Database,
        settings: ServiceSettings,
        announce: Callable[[Sequence[str]], None],
        *,
        broker_was_reset: Callable[[], bool] | None = None,
        store: ArtifactStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._settings = settings
        self._announce = announce
        self._broker_was_reset = broker_was_reset
        self._store = store
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._figures_thread: threading.Thread | None = None
        self._reachable_since: float | None = None
        self._announced_at: dict[str, float] = {}
        # Re-announcements of a batch still waiting: each doubles the wait before the next, so a
        # backlog that takes hours to drain gets a few copies of a message, not one per interval.
        self._reannounced: dict[str, int] = {}
        self._pruned_at = float("-inf")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gni-lease-reaper", daemon=True)
        self._thread.start()
        if self._store is not None:
            self._figures_thread = threading.Thread(
                target=self._figures_loop, name="gni-figures-reaper", daemon=True
            )
            self._figures_thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        for thread in (self._thread, self._figures_thread):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._figures_thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self._settings.reaper_interval_s):
            try:
                self.run_once()
            except Exception as error:
                # The database is away: judge no lease until it has been back for a whole lease.
                self._reachable_since = None
                log.warning("lease reaper pass failed: %s: %s", type(error).__name__, error)

    def _figures_loop(self) -> None:
        while not self._stop.wait(self._settings.reaper_interval_s):
            try:
                self.redraw_figures()
            except Exception as error:
                log.warning("figures reaper pass failed: %s: %s", type(error).__name__, error)

    def redraw_figures(self) -> list[str]:
        """Draw the due figures of finished experiments (see above); the experiments drawn."""
        if self._store is None:
            return []
        with self._database.reading() as session:
            due = experiments_missing_figures(session, self._settings)
            abandoned = abandoned_figures(session, self._settings)
        if abandoned:
            with self._database.transaction() as session:
                given_up = give_up_abandoned_figures(session, self._settings)
            log.warning("gave up drawing the figures of %d experiments: attempts used up", given_up)
        drawn = []
        for experiment_id in due:
            if self._stop.is_set():
                break
            if store_experiment_figures(self._database, self._store, self._settings, experiment_id):
                log.info("drew the missing figures of experiment %s", experiment_id)
                drawn.append(experiment_id)
        return drawn

    def run_once(self) -> ReapReport:
        """One pass: expired leases, then batches whose messages may be lost."""
        settings = self._settings
        now = self._clock()
        self._database.check()
        if self._reachable_since is None:
            self._reachable_since = now
        report = ReapReport()
        if now - self._reachable_since >= settings.lease_timeout_s and self._any_expired():
            with self._database.transaction() as session:
                report = expire_leases(
                    session, lease_timeout_s=settings.lease_timeout_s, max_attempts=settings.max_attempts
                )
            if report.requeued or report.failed or report.cancelled:
                log.warning(
                    "expired leases: %d re-queued %s, %d failed (attempts used up) %s, %d cancelled %s",
                    len(report.requeued),
                    _some(report.requeued),
                    len(report.failed),
                    _some(report.failed),
                    len(report.cancelled),
                    _some(report.cancelled),
                    extra={"run_ids": [*report.requeued, *report.failed, *report.cancelled][:LOGGED_IDS]},
                )
        keys = set(report.batch_keys)
        reset = self._broker_reset()
        stale_before = utcnow() - timedelta(seconds=settings.requeue_queued_after_s)
        with self._database.reading() as session:
            waiting = queued_batches(session, queued_before=None if reset else stale_before)
        if reset:
            log.warning("the broker lost its messages: announcing %d queued batches again", len(waiting))
            keys.update(waiting)
        else:

            def due(key: str) -> bool:
                doublings = min(self._reannounced.get(key, 0), MAX_REANNOUNCE_DOUBLINGS)
                wait = settings.requeue_queued_after_s * 2.0**doublings
                return self._announced_at.get(key, float("-inf")) <= now - wait

            stale = {k for k in waiting if due(k)}
            for key in stale:
                self._reannounced[key] = self._reannounced.get(key, 0) + 1
            keys.update(stale)
            self._reannounced = {k: n for k, n in self._reannounced.items() if k in waiting}
        if keys:
            self._announce(sorted(keys))
            self._announced_at.update(dict.fromkeys(keys, now))
        self._prune_idempotency_records(now)
        # Forget announcements old enough to restrict nothing any more.
        horizon = now - settings.requeue_queued_after_s * 2.0**MAX_REANNOUNCE_DOUBLINGS
        self._announced_at = {k: t for k, t in self._announced_at.items() if t > horizon}
        return report

    def _prune_idempotency_records(self, now: float) -> None:
        """Every few minutes: delete Idempotency-Key answers older than GNI_IDEMPOTENCY_TTL_S."""
        if now - self._pruned_at < PRUNE_INTERVAL_S:
            return
        self._pruned_at = now
        older_than = utcnow() - timedelta(seconds=self._settings.idempotency_ttl_s)
        with self._database.transaction() as session:
            pruned = prune_responses(session, older_than)
        if pruned:
            log.info(
                "deleted %d Idempotency-Key answers older than %g s", pruned, self._settings.idempotency_ttl_s
            )

    def _any_expired(self) -> bool:
        """A read first: the write transaction (a lock, on SQLite) only when there is work."""
        cutoff = utcnow() - timedelta(seconds=self._settings.lease_timeout_s)
        with self._database.reading() as session:
            found = session.scalar(
                select(Run.id)
                .where(Run.status == RunStatus.running)
                .where((Run.heartbeat_at < cutoff) | Run.heartbeat_at.is_(None))
                .limit(1)
            )
        return found is not None

    def _broker_reset(self) -> bool:
        if self._broker_was_reset is None:
            return False
        try:
            return self._broker_was_reset()
        except Exception as error:
            # Down now: once it is back (empty, if it restarted), the next pass finds out.
            log.warning("cannot ask the broker whether it lost its messages: %s", error)
            return False
