"""Storage faults while a batch records its outcome: never succeeded without verified artifacts."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from gni_service.db import Database
from gni_service.executor.batch import BatchContext, execute_batch
from gni_service.executor.claims import claim_batch
from gni_service.migrate import upgrade_database
from gni_service.models import Artifact, RunStatus
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore, StorageError, StoredObject

from .scenario import runs_of, submit, with_steps


class FlakyStore(LocalArtifactStore):
    """Refuses the first ``failures`` artifact uploads; with ``corrupt``, misreports every digest."""

    def __init__(self, root: Path, *, failures: int = 0, corrupt: bool = False) -> None:
        super().__init__(root)
        self.failures = failures
        self.corrupt = corrupt
        self._lock = threading.Lock()  # uploads run in several threads

    def put_file(self, key: str, source: Path, content_type: str) -> StoredObject:
        with self._lock:
            refuse = key.startswith("experiments/") and self.failures > 0
            self.failures -= refuse
        if refuse:
            raise StorageError("the store is unreachable")
        stored = super().put_file(key, source, content_type)
        return replace(stored, sha256="0" * 64) if self.corrupt and key.startswith("experiments/") else stored


@pytest.fixture
def context(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'storage.sqlite3'}"
    upgrade_database(url)
    settings = ServiceSettings(data_folder=tmp_path / "data", database_url=url, infrastructure_retry_s=30)
    database = Database(url)
    yield BatchContext(
        database, LocalArtifactStore(settings.resolved_artifact_dir), settings, threading.Event()
    )
    database.dispose()


def _claim(context: BatchContext, spec: dict):
    experiment_id, [key] = submit(context.database, spec)
    with context.database.transaction() as session:
        return experiment_id, claim_batch(session, key)


def test_a_store_down_for_a_while_delays_the_outcome_and_loses_nothing(context):
    store = FlakyStore(context.settings.resolved_artifact_dir, failures=2)
    experiment_id, runs = _claim(context, with_steps(20))
    execute_batch(replace(context, store=store), runs)
    [run] = runs_of(context.database, experiment_id)
    assert run.status == RunStatus.succeeded and store.failures == 0
    with context.database.reading() as session:
        artifacts = list(session.scalars(select(Artifact).where(Artifact.run_id == run.id)))
    assert {a.name for a in artifacts} >= {"model.safetensors", "metrics.csv", "results.json"}
    for artifact in artifacts:  # each recorded digest is the stored file's
        data = (store.root / artifact.key).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (artifact.size, artifact.sha256)


def test_an_unverified_upload_never_marks_the_run_succeeded(context):
    store = FlakyStore(context.settings.resolved_artifact_dir, corrupt=True)
    settings = context.settings.model_copy(update={"infrastructure_retry_s": 1.0})
    experiment_id, runs = _claim(context, with_steps(20))
    with pytest.raises(StorageError, match="different size or SHA-256"):
        execute_batch(replace(context, store=store, settings=settings), runs)
    [run] = runs_of(context.database, experiment_id)
    assert run.status == RunStatus.running  # handed back to the caller (re-queue) or to its lease
    with context.database.reading() as session:
        assert session.scalars(select(Artifact).where(Artifact.run_id == run.id)).all() == []
