"""Artifact records: storing a run's or an experiment's files, finding and deleting them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.orm import Session

from gni_engine.errors import NotFound, SpecError
from gni_service.db import Database
from gni_service.ids import new_id
from gni_service.models import Artifact, utcnow
from gni_service.pagination import Page, decode_cursor, encode_cursor
from gni_service.storage import ArtifactStore, StorageError, file_digest

CONTENT_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".pdf": "application/pdf",
    ".json": "application/json",
    ".csv": "text/csv",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".yaml": "application/yaml",
    ".safetensors": "application/octet-stream",
    ".pt": "application/octet-stream",
}


def describe(name: str) -> tuple[str, str, str]:
    """Kind, content type and stored extension of an artifact named by the engine.

    >>> describe("figures/function.png")
    ('figure', 'image/png', '.png')
    >>> describe("model.safetensors")
    ('weights', 'application/octet-stream', '.safetensors')
    """
    suffix = PurePosixPath(name).suffix.lower()
    content_type = CONTENT_TYPES.get(suffix, "application/octet-stream")
    extension = suffix if suffix in CONTENT_TYPES else ""
    if suffix in (".png", ".svg", ".pdf"):
        kind = "figure"
    elif suffix in (".safetensors", ".pt"):
        kind = "weights"
    elif suffix == ".csv" or PurePosixPath(name).stem == "metrics":
        kind = "metrics"
    elif suffix in (".json", ".md"):
        kind = "results"
    else:
        kind = "other"
    return kind, content_type, extension


@dataclass(frozen=True)
class ArtifactUpload:
    """A file to store as an artifact of an experiment (``run_id``: of one of its runs)."""

    source: Path
    name: str
    experiment_id: str
    run_id: str | None


def store_artifacts(
    session: Session, store: ArtifactStore, uploads: Sequence[ArtifactUpload], *, threads: int = 1
) -> list[Artifact]:
    """:func:`store_artifact` for each upload, ``threads`` uploads at a time; records added in order.

    The uploads overlap their round trips to the store (two per object on S3: the upload and the
    check), which is most of recording a large batch. The session is only touched here, in this
    thread. The first failed upload raises once the uploads under way have ended (the ones not yet
    started are dropped); no record is added then.
    """
    if threads < 1:
        raise ValueError(f"upload threads must be at least 1, got {threads}")
    if threads == 1 or len(uploads) < 2:
        artifacts = [upload_artifact(store, upload) for upload in uploads]
    else:
        with ThreadPoolExecutor(min(threads, len(uploads)), thread_name_prefix="gni-upload") as pool:
            futures = [pool.submit(upload_artifact, store, upload) for upload in uploads]
            try:
                artifacts = [future.result() for future in futures]
            except BaseException:
                for future in futures:  # a store that is down: not one more wait per file
                    future.cancel()
                raise
    session.add_all(artifacts)
    return artifacts


def store_artifact(
    session: Session,
    store: ArtifactStore,
    source: Path,
    *,
    name: str,
    experiment_id: str,
    run_id: str | None,
) -> Artifact:
    """Copy ``source`` into the store under a key made of ids and record it (size and SHA-256).

    Raises :class:`StorageError` unless the stored copy is verified against the source.
    """
    artifact = upload_artifact(store, ArtifactUpload(source, name, experiment_id, run_id))
    session.add(artifact)
    return artifact


def upload_artifact(store: ArtifactStore, upload: ArtifactUpload) -> Artifact:
    """Store the file and verify the copy; the record it gets, not yet added to any session."""
    source, name, experiment_id, run_id = upload.source, upload.name, upload.experiment_id, upload.run_id
    kind, content_type, extension = describe(name)
    artifact_id = new_id("art")
    owner = f"runs/{run_id}" if run_id else "experiment"
    key = f"experiments/{experiment_id}/{owner}/{artifact_id}{extension}"
    size, sha256 = file_digest(source)
    stored = store.put_file(key, source, content_type)
    if (stored.size, stored.sha256) != (size, sha256):
        # The stores check what they wrote (read back, or by size): a mismatch is a failed upload.
        raise StorageError(f"artifact {key} was stored with a different size or SHA-256 than its source")
    artifact = Artifact(
        id=artifact_id,
        experiment_id=experiment_id,
        run_id=run_id,
        kind=kind,
        name=name[:255],
        key=stored.key,
        content_type=content_type,
        size=stored.size,
        sha256=stored.sha256,
        created_at=utcnow(),
    )
    return artifact


def get_artifact(session: Session, artifact_id: str) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None:
        raise NotFound(f"no artifact with id '{artifact_id}'")
    return artifact


def list_run_artifacts(session: Session, run_id: str) -> list[Artifact]:
    statement = select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.name, Artifact.id)
    return list(session.scalars(statement))


def list_experiment_artifacts(
    session: Session, experiment_id: str, *, include_runs: bool, limit: int, cursor: str | None = None
) -> Page[Artifact]:
    """One page of an experiment's artifacts: its own (comparison figures) first, then each run's,
    by run id, name and id (keyset pagination: a sweep of 10,000 runs holds 140,000 artifacts)."""
    run_key = func.coalesce(Artifact.run_id, "")  # the experiment's own files sort first
    statement = select(Artifact).where(Artifact.experiment_id == experiment_id)
    if not include_runs:
        statement = statement.where(Artifact.run_id.is_(None))
    if cursor is not None:
        position = decode_cursor(cursor, "artifacts")
        try:
            after = (str(position["run"]), str(position["name"]), str(position["id"]))
        except KeyError:
            raise SpecError("invalid cursor", details=[{"loc": "cursor", "msg": "invalid cursor"}]) from None
        statement = statement.where(tuple_(run_key, Artifact.name, Artifact.id) > tuple_(*after))
    statement = statement.order_by(run_key, Artifact.name, Artifact.id).limit(limit + 1)
    items = list(session.scalars(statement))
    if len(items) <= limit:
        return Page(items, None)
    last = items[limit - 1]
    position = {"kind": "artifacts", "run": last.run_id or "", "name": last.name, "id": last.id}
    return Page(items[:limit], encode_cursor(position))


# Well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
KEYS_PER_QUERY = 500


def delete_artifacts(database: Database, store: ArtifactStore, artifact_ids: Sequence[str]) -> list[str]:
    """Delete artifact records, then each stored object no record names any more; the keys deleted.

    Records of reused runs share their source's objects (see :mod:`gni_service.reuse`), so an
    object goes only with its last record. The references are counted after the records are
    deleted, in the same transaction: a reuse copying these records holds them ``FOR SHARE``, so
    either it commits first and its new records are counted, or it waits and finds nothing to copy.
    Objects are deleted after the commit; one left behind by a failure here is unreferenced garbage,
    never a record without its object.
    """
    keys: set[str] = set()
    with database.transaction() as session:
        ids = list(artifact_ids)
        for start in range(0, len(ids), KEYS_PER_QUERY):
            chunk = ids[start : start + KEYS_PER_QUERY]
            keys |= set(
                session.scalars(delete(Artifact).where(Artifact.id.in_(chunk)).returning(Artifact.key))
            )
        orphaned = unnamed_keys(session, keys)
    store.delete_many(orphaned)
    return orphaned


def unnamed_keys(session: Session, keys: Collection[str]) -> list[str]:
    """The keys of ``keys`` that no artifact record names (any more), sorted; asked in chunks, so a
    sweep's hundred thousand keys stay within every database's bound parameters."""
    ordered = sorted(set(keys))
    named: set[str] = set()
    for start in range(0, len(ordered), KEYS_PER_QUERY):
        chunk = ordered[start : start + KEYS_PER_QUERY]
        named |= set(session.scalars(select(Artifact.key).where(Artifact.key.in_(chunk)).distinct()))
    return [key for key in ordered if key not in named]
