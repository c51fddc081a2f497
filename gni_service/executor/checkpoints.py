"""Runs' checkpoints in the artifact store, so that another worker can resume a run a dead one left.

Two objects per run, ``checkpoints/<run id>.safetensors`` and ``checkpoints/<run id>-b.safetensors``
(the engine's documented checkpoint dict, see :mod:`gni_engine.checkpoint`), written in turn, so the
previous checkpoint survives while the next is written: a worker that dies half-way through saving a
batch (some runs at the new step, some not yet) leaves every run its checkpoint at the previous
step, and the batch resumes from there instead of from scratch. Both are deleted once the run's
outcome is recorded. The store is the one every worker shares (S3 in the distributed mode), so a
run re-queued after its worker died resumes on whichever worker claims it next.

Writing is bounded: every ``checkpoint_every_steps`` steps, and not more often than
``checkpoint_min_interval_s``. Failing to write or read a checkpoint never fails a run: the run
keeps training, or starts again from scratch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gni_service.executor.claims import ClaimedRun
from gni_service.storage import ArtifactStore, StorageError

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/octet-stream"


SLOTS = (0, 1)


def checkpoint_key(run_id: str, slot: int = 0) -> str:
    """The store key of one of a run's two checkpoint slots (made of the run's id only).

    >>> checkpoint_key("run_abc"), checkpoint_key("run_abc", 1)
    ('checkpoints/run_abc.safetensors', 'checkpoints/run_abc-b.safetensors')
    """
    return f"checkpoints/{run_id}.safetensors" if slot == 0 else f"checkpoints/{run_id}-b.safetensors"


class StoredCheckpoints:
    """The engine's ``RunCheckpoints`` for one claimed batch, kept in an artifact store."""

    def __init__(
        self,
        store: ArtifactStore,
        runs: Sequence[ClaimedRun],
        scratch_dir: Path,
        *,
        every: int,
        min_interval_s: float,
        on_started: Callable[[int, dict[str, Any] | None], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self._store = store
        self._runs = list(runs)
        self._scratch_dir = scratch_dir
        self._min_interval_s = min_interval_s
        self._on_started = on_started
        self._clock = clock
        self._last_saved: float | None = None
        self._next_slot = [0] * len(self._runs)  # per run: the slot the next save writes
        self._loaded_slots: dict[tuple[int, int], int] = {}  # (index, step) → slot it was read from
        self.saved = 0

    # ------------------------------------------------------------------------- RunCheckpoints
    def load(self, index: int) -> list[dict[str, Any]]:
        """Every checkpoint stored for the run (up to two, at different steps)."""
        if self._runs[index].attempt <= 1:
            return []  # only an earlier claim of this run writes its checkpoints: no store round-trip
        found = []
        for slot in SLOTS:
            checkpoint = self._read(index, slot)
            if checkpoint is not None:
                self._loaded_slots.setdefault((index, int(checkpoint["step"])), slot)
                found.append(checkpoint)
        return found

    def _read(self, index: int, slot: int) -> dict[str, Any] | None:
        from gni_engine.checkpoint import load_checkpoint

        key = checkpoint_key(self._runs[index].id, slot)
        try:
            data = self._store.read_bytes(key)
        except StorageError:
            return None  # none yet (or the store is down)
        self._scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self._scratch_dir, suffix=".safetensors") as handle:
            handle.write(data)
            handle.flush()
            try:
                return load_checkpoint(Path(handle.name))
            except Exception:
                log.warning(
                    "unreadable checkpoint %s: not used",
                    key,
                    exc_info=True,
                    extra={"run_id": self._runs[index].id},
                )
                return None

    def save(self, checkpoints: dict[int, dict[str, Any]]) -> None:
        now = self._clock()
        if self._last_saved is not None and now - self._last_saved < self._min_interval_s:
            return
        self._last_saved = now
        from gni_engine.checkpoint import save_checkpoint

        self._scratch_dir.mkdir(parents=True, exist_ok=True)
        complete = True
        for index, checkpoint in checkpoints.items():
            run_id = self._runs[index].id
            path = self._scratch_dir / f"{run_id}.safetensors"
            try:
                save_checkpoint(checkpoint, path)
                self._store.put_file(checkpoint_key(run_id, self._next_slot[index]), path, CONTENT_TYPE)
                self.saved += 1
            except (StorageError, OSError):
                complete = False
                # Insurance only: without it a lost run restarts from an older checkpoint or from 0.
                log.warning(
                    "could not write the checkpoint of run %s",
                    run_id,
                    exc_info=True,
                    extra={"run_id": run_id},
                )
            finally:
                path.unlink(missing_ok=True)
        if complete:  # every run now holds this step: the other slots may be overwritten next
            for index in checkpoints:
                self._next_slot[index] = 1 - self._next_slot[index]
        # else the next save rewrites the same slots, and the step before this one stays whole for all

    def started(self, index: int, checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is not None:
            run_id = self._runs[index].id
            log.info("run %s resumes at step %d", run_id, checkpoint["step"], extra={"run_id": run_id})
            # the first save goes to the other slot: the checkpoint resumed from stays until it is done
            self._next_slot[index] = 1 - self._loaded_slots.get((index, int(checkpoint["step"])), 1)
        self._on_started(index, checkpoint)

    def discard(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints of runs whose outcome is recorded (best effort)."""
        for run_id in run_ids:
            try:
                for slot in SLOTS:
                    self._store.delete(checkpoint_key(run_id, slot))
            except StorageError:
                log.warning(
                    "could not delete the checkpoint of run %s",
                    run_id,
                    exc_info=True,
                    extra={"run_id": run_id},
                )
