"""The embedded executor: a few threads of the API process train queued batches.

Each thread loops: claim the longest-waiting queued batch (a conditional update), train it with
:func:`execute_batch`, repeat; with nothing queued it sleeps until :meth:`enqueue` wakes it or
``idle_poll_interval_s`` passes (so runs queued by another process are found too). On start it
re-queues runs a dead process left ``running`` — in the embedded mode no other process trains, so
every such run is an orphan. On stop, running batches are interrupted between steps and their runs
go back to the queue, to start again after the restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager

from sqlalchemy import select

from gni_engine.errors import GNIError
from gni_service.db import Database
from gni_service.executor.batch import BatchContext, execute_batch
from gni_service.executor.claims import (
    ClaimedRun,
    claim_batch,
    next_queued_batch,
    orphaned_runs,
    requeue_runs,
)
from gni_service.executor.leases import LeaseReaper
from gni_service.experiments import refresh_experiment
from gni_service.models import Run
from gni_service.settings import ServiceSettings
from gni_service.storage import ArtifactStore
from gni_service.structured_logging import log_context

log = logging.getLogger(__name__)


class ExecutorNotRunning(GNIError):
    error_type = "executor_unavailable"


class InProcessExecutor:
    """A bounded pool of training threads inside this process."""

    name = "inprocess"

    def __init__(self, database: Database, store: ArtifactStore, settings: ServiceSettings) -> None:
        self._context = BatchContext(database, store, settings, threading.Event())
        self._threads: list[threading.Thread] = []
        self._wake = threading.Condition()
        self._pending = 0
        self._reaper = LeaseReaper(database, settings, self.enqueue, store=store)

    @property
    def stopping(self) -> bool:
        return self._context.stopping.is_set()

    def start(self) -> None:
        if self._threads:
            return
        recovered = self.recover_orphans()
        if recovered:
            log.warning("re-queued %d runs left running by a previous process", recovered)
        for i in range(self._context.settings.executor_threads):
            thread = threading.Thread(target=self._work, name=f"gni-executor-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._reaper.start()

    def recover_orphans(self) -> int:
        with self._context.database.transaction() as session:
            run_ids = orphaned_runs(session)
            count = requeue_runs(session, run_ids, reason="re-queued: the process running it stopped")
            experiments = session.scalars(select(Run.experiment_id).where(Run.id.in_(run_ids)).distinct())
            for experiment_id in sorted(experiments):
                refresh_experiment(session, experiment_id)
        return count

    def enqueue(self, batch_keys: Sequence[str]) -> None:
        with self._wake:
            self._pending += len(batch_keys)
            self._wake.notify(len(batch_keys))

    def stop(self, timeout: float | None = None) -> None:
        self._reaper.stop(timeout)
        self._context.stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def check(self) -> None:
        if self.stopping:
            raise ExecutorNotRunning("the executor is shutting down")
        if not self._threads or not all(t.is_alive() for t in self._threads):
            raise ExecutorNotRunning("the executor's training threads are not running")

    def run_next_batch(self) -> bool:
        """Claim and train one batch; False when nothing was queued."""
        claimed = self._claim_next()
        if claimed is None:
            return False
        with _batch_log_context(*claimed):
            self._train(*claimed)
        return True

    def _claim_next(self) -> tuple[str, list[ClaimedRun]] | None:
        with self._context.database.transaction() as session:
            batch_key = next_queued_batch(session)
            if batch_key is None:
                return None
            runs = claim_batch(session, batch_key)
            for experiment_id in sorted({run.experiment_id for run in runs}):
                refresh_experiment(session, experiment_id)
        return batch_key, runs

    def _train(self, batch_key: str, runs: list[ClaimedRun]) -> None:
        if runs:
            attempt = max(run.attempt for run in runs)
            log.info("batch %s: claimed %d runs (attempt %d)", batch_key, len(runs), attempt)
        execute_batch(self._context, runs)

    def _work(self) -> None:
        settings = self._context.settings
        while not self.stopping:
            try:
                claimed = self._claim_next()
            except Exception:
                # The database may be briefly unreachable: log, back off, keep the thread alive.
                log.exception("executor thread failed to claim a batch")
                self._context.stopping.wait(settings.idle_poll_interval_s)
                continue
            if claimed is not None:
                self._train_quietly(*claimed)
                continue
            with self._wake:
                if self._pending == 0:
                    self._wake.wait(settings.idle_poll_interval_s)
                self._pending = max(0, self._pending - 1)

    def _train_quietly(self, batch_key: str, runs: list[ClaimedRun]) -> None:
        """Train a claimed batch; a failure to record it is logged (with the batch's ids), then backed off."""
        with _batch_log_context(batch_key, runs):
            try:
                self._train(batch_key, runs)
            except Exception:
                log.exception("executor thread failed to record batch %s", batch_key)
                self._context.stopping.wait(self._context.settings.idle_poll_interval_s)


def _batch_log_context(batch_key: str, runs: list[ClaimedRun]) -> AbstractContextManager[None]:
    experiment_id = runs[0].experiment_id if runs else batch_key.partition("/")[0]
    return log_context(batch_key=batch_key, experiment_id=experiment_id, run_ids=[run.id for run in runs])
