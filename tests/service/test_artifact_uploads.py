"""A batch's artifacts upload several at a time: same records, in order, and a failure stores none."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from gni_service.artifacts import ArtifactUpload, store_artifacts
from gni_service.storage import LocalArtifactStore, StorageError, StoredObject


def _uploads(tmp_path: Path, n: int) -> list[ArtifactUpload]:
    uploads = []
    for i in range(n):
        source = tmp_path / "work" / f"file-{i}.json"
        source.parent.mkdir(exist_ok=True)
        source.write_text(f'{{"file": {i}}}')
        uploads.append(ArtifactUpload(source, f"results-{i}.json", "exp_1", f"run_{i % 3}"))
    return uploads


class MeetingStore(LocalArtifactStore):
    """Its first ``meet`` uploads wait for one another: they complete only if they run at once."""

    def __init__(self, root: Path, meet: int) -> None:
        super().__init__(root)
        self.barrier = threading.Barrier(meet, timeout=20)
        self.calls = 0
        self.lock = threading.Lock()

    def put_file(self, key: str, source: Path, content_type: str) -> StoredObject:
        with self.lock:
            self.calls += 1
            first = self.calls <= self.barrier.parties
        if first:
            self.barrier.wait()
        return super().put_file(key, source, content_type)


def test_uploads_overlap_and_records_keep_their_order(tmp_path: Path):
    store = MeetingStore(tmp_path / "store", meet=3)
    uploads = _uploads(tmp_path, 10)
    session = Session()
    artifacts = store_artifacts(session, store, uploads, threads=3)
    assert list(session.new) == artifacts and store.calls == 10
    assert [(a.name, a.run_id) for a in artifacts] == [(u.name, u.run_id) for u in uploads]
    assert len({a.key for a in artifacts}) == 10
    for artifact, upload in zip(artifacts, uploads, strict=True):
        stored = store.read_bytes(artifact.key)
        assert stored == upload.source.read_bytes()
        assert artifact.sha256 == hashlib.sha256(stored).hexdigest() and artifact.size == len(stored)


class DownStore(LocalArtifactStore):
    """Refuses every upload after the first, slowly (as a store that times out would)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls = 0
        self.lock = threading.Lock()

    def put_file(self, key: str, source: Path, content_type: str) -> StoredObject:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            return super().put_file(key, source, content_type)
        threading.Event().wait(0.05)
        raise StorageError("the store is unreachable")


def test_a_failed_upload_records_nothing_and_starts_no_more_uploads(tmp_path: Path):
    store = DownStore(tmp_path / "store")
    session = Session()
    with pytest.raises(StorageError, match="unreachable"):
        store_artifacts(session, store, _uploads(tmp_path, 60), threads=4)
    assert not session.new
    assert store.calls < 12  # the uploads under way when the first failed, not all 60


def test_upload_threads_must_be_positive(tmp_path: Path):
    with pytest.raises(ValueError, match="upload threads must be at least 1, got 0"):
        store_artifacts(Session(), LocalArtifactStore(tmp_path), [], threads=0)
