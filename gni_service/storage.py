"""Artifact storage behind one small interface; this module holds the local-directory store.

Keys are built by the service from ids (``experiments/<exp>/runs/<run>/<artifact id>.png``), never
from user input; a store still refuses any key that could leave its root. Downloads are described
by a :class:`Download`: a local file the API streams, or a URL it redirects to (an object store's
presigned URL), so large files need not pass through the API process.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gni_engine.errors import GNIError

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+)*(?:\.[a-z0-9]{1,16})?$")
_CHUNK = 1 << 20


class StorageError(GNIError):
    """The artifact store cannot be reached or refused an operation."""

    error_type = "storage_error"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Download:
    """Where a client gets an artifact's bytes: exactly one of ``path`` and ``url`` is set."""

    path: Path | None = None
    url: str | None = None


class ArtifactStore(Protocol):
    """What the executor needs to keep files and the API needs to serve them."""

    def put_file(self, key: str, source: Path, content_type: str) -> StoredObject:
        """Store a copy of ``source`` under ``key``, returning its size and SHA-256."""
        ...

    def download(self, key: str, *, filename: str, content_type: str) -> Download: ...

    def read_bytes(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete these objects (missing ones are no error)."""
        ...

    def check(self) -> None:
        """Raise :class:`StorageError` unless the store can be written."""
        ...


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check_key(key: str) -> str:
    if not _KEY.match(key) or len(key) > 512:
        raise StorageError(f"refusing artifact key {key!r}: keys are made of ids, '/' and one extension")
    return key


class LocalArtifactStore:
    """Artifacts as files under one root directory (the embedded mode's store)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"refusing artifact key {key!r}: it leaves the store")
        return path

    def put_file(self, key: str, source: Path, content_type: str) -> StoredObject:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Copy to a temporary name and rename: a reader never sees half a file.
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=".upload-") as handle:
                temporary = Path(handle.name)
                with source.open("rb") as reader:
                    shutil.copyfileobj(reader, handle, _CHUNK)
            os.replace(temporary, target)
        except OSError as error:
            raise StorageError(f"cannot store artifact {key}: {error.strerror}") from error
        size, sha256 = file_digest(target)
        return StoredObject(key, size, sha256)

    def download(self, key: str, *, filename: str, content_type: str) -> Download:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"artifact {key} is missing from the store")
        return Download(path=path)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as error:
            raise StorageError(f"cannot read artifact {key}: {error.strerror}") from error

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.delete(key)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                pass
        except OSError as error:
            raise StorageError(f"artifact directory {self.root} is not writable: {error.strerror}") from error
