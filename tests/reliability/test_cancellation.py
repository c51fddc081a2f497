"""Cancellation in the embedded executor: the same checks as for the Celery one (``test_faults``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gni_service.db import Database
from gni_service.executor.inprocess import InProcessExecutor
from gni_service.settings import ServiceSettings
from gni_service.storage import LocalArtifactStore

from .conftest import FAST_LEASES
from .scenario import SEEDS, check_cancellation, submit, with_steps

pytestmark = [pytest.mark.postgres]


def test_cancelling_queued_and_running_runs_in_the_inprocess_executor(database_url, tmp_path: Path):
    env = {**FAST_LEASES, "GNI_DATABASE_URL": database_url, "GNI_DATA_FOLDER": str(tmp_path / "data")}
    settings = ServiceSettings.from_env(env)
    database = Database(database_url, pool_size=2)
    executor = InProcessExecutor(database, LocalArtifactStore(settings.resolved_artifact_dir), settings)
    executor.start()
    try:
        running_id, running_keys = submit(database, with_steps(4000), SEEDS)
        queued_id, queued_keys = submit(database, with_steps(4001), SEEDS)
        executor.enqueue(running_keys + queued_keys)
        check_cancellation(database, running_id, queued_id)
    finally:
        executor.stop(10.0)
        database.dispose()
