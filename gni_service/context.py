"""Everything one process of the service holds: settings, database, artifact store, executor."""

from __future__ import annotations

from dataclasses import dataclass, field

from gni_service.db import Database
from gni_service.executor.base import Executor
from gni_service.migrate import check_schema, upgrade_database
from gni_service.readiness import ReadinessProbe
from gni_service.settings import ServiceSettings
from gni_service.storage import ArtifactStore, LocalArtifactStore


@dataclass
class ServiceContext:
    settings: ServiceSettings
    database: Database
    store: ArtifactStore
    executor: Executor
    readiness: ReadinessProbe = field(init=False)

    def __post_init__(self) -> None:
        self.readiness = ReadinessProbe(
            {
                "database": lambda: check_schema(self.database.engine),
                "storage": lambda: self.store.check(),  # looked up at each probe: a swapped store counts
                "executor": lambda: self.executor.check(),
            }
        )

    def close(self, timeout: float | None = 30.0) -> None:
        self.executor.stop(timeout)
        self.database.dispose()


def build_artifact_store(settings: ServiceSettings) -> ArtifactStore:
    if settings.artifact_store == "s3":
        from gni_service.storage_s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(settings)
    return LocalArtifactStore(settings.resolved_artifact_dir)


def build_executor(settings: ServiceSettings, database: Database, store: ArtifactStore) -> Executor:
    if settings.executor == "inprocess":
        from gni_service.executor.inprocess import InProcessExecutor

        return InProcessExecutor(database, store, settings)
    if settings.executor == "celery":
        from gni_service.executor.celery_executor import CeleryExecutor

        return CeleryExecutor(database, settings, store=store)
    raise ValueError(f"unknown executor {settings.executor!r}")


def build_context(settings: ServiceSettings, *, executor: Executor | None = None) -> ServiceContext:
    """Open the database (migrating it first when the settings say so) and the store; start nothing."""
    settings.data_folder.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start:
        upgrade_database(settings.resolved_database_url)
    database = Database(settings.resolved_database_url)
    store = build_artifact_store(settings)
    return ServiceContext(settings, database, store, executor or build_executor(settings, database, store))
