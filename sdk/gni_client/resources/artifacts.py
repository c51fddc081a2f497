"""``client.artifacts``: list a run's or an experiment's files and download them (checked by SHA-256)."""

from __future__ import annotations

import builtins
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from gni_client._base_client import RequestOptions
from gni_client._exceptions import DownloadIntegrityError
from gni_client.resources._paths import artifact_path, experiment_path, run_path
from gni_client.types import Artifact

if TYPE_CHECKING:
    from gni_client._client import AsyncClient, Client

__all__ = ["Artifacts", "AsyncArtifacts"]

PathLike = str | os.PathLike[str]


def list_options(
    experiment_id: str | None, run_id: str | None, include_runs: bool, cursor: str | None = None
) -> RequestOptions:
    """The request of one page (an experiment's list comes in pages: follow ``next_cursor``)."""
    if (experiment_id is None) == (run_id is None):
        raise ValueError("give either experiment_id= or run_id=")
    if run_id is not None:
        return RequestOptions("GET", run_path(run_id, "artifacts"))
    assert experiment_id is not None
    params = {"include_runs": "true"} if include_runs else {}
    if cursor is not None:
        params["cursor"] = cursor
    return RequestOptions("GET", experiment_path(experiment_id, "artifacts"), params=params or None)


def _safe_parts(text: str) -> list[str]:
    """``text``'s path segments without roots, ``.``, ``..`` or drive letters (``C:``)."""
    parts = PurePosixPath(text.replace("\\", "/")).parts
    return [p for p in parts if p not in ("", ".", "..", "/") and ":" not in p]


def _segment(text: str, what: str) -> str:
    """One path segment made of a service id; anything else (``..``, ``a/b``, ``/abs``) is refused."""
    if _safe_parts(text) != [text]:
        raise ValueError(f"the service sent an unusable {what} {text!r} for a file name")
    return text


def relative_name(artifact: Artifact) -> PurePosixPath:
    """The artifact's name as a safe relative path (``figures/function.png``; no ``..``, no root)."""
    parts = _safe_parts(artifact.name)
    return PurePosixPath(*parts) if parts else PurePosixPath(_segment(artifact.id, "artifact id"))


def destination(artifact: Artifact, to: PathLike) -> Path:
    """``to/<artifact name>`` when ``to`` is a folder (existing, or ending in ``/``), else ``to`` itself."""
    target = Path(to)
    if target.is_dir() or str(to).endswith(("/", os.sep)):
        return target / relative_name(artifact)
    return target


def layout(artifact: Artifact, root: PathLike) -> Path:
    """Where :meth:`Artifacts.download_all` puts an artifact: experiment files at the top, a run's in
    ``runs/<run id>/``."""
    if artifact.run_id is None:
        return Path(root) / relative_name(artifact)
    return Path(root) / "runs" / _segment(artifact.run_id, "run id") / relative_name(artifact)


def _filter(artifacts: Iterable[Artifact], kind: str | None) -> list[Artifact]:
    return [a for a in artifacts if kind is None or a.kind == kind]


def _new_part_file(target: Path) -> tuple[int, Path]:
    """A new, empty ``.<name>.<random>.part`` beside ``target``, open for writing, with the mode the
    process's umask gives any new file (``tempfile.mkstemp`` makes 0600, which the rename would keep)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


class _Writer:
    """Writes a download next to its destination, checks its hash, then moves it into place."""

    def __init__(self, artifact: Artifact, target: Path) -> None:
        self.artifact = artifact
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, self.temp = _new_part_file(target)
        self.file: BinaryIO = os.fdopen(handle, "wb")
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.digest.update(chunk)

    def finish(self) -> Path:
        self.file.close()
        expected = self.artifact.sha256
        if expected and self.digest.hexdigest() != expected:
            self.temp.unlink(missing_ok=True)
            raise DownloadIntegrityError(
                f"artifact '{self.artifact.id}' ({self.artifact.name}) arrived with SHA-256 "
                f"{self.digest.hexdigest()}, the service recorded {expected}"
            )
        self.temp.replace(self.target)
        return self.target

    def abort(self) -> None:
        self.file.close()
        self.temp.unlink(missing_ok=True)


class Artifacts:
    """Artifacts of a :class:`~gni_client.Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(
        self,
        *,
        experiment_id: str | None = None,
        run_id: str | None = None,
        include_runs: bool = False,
        kind: str | None = None,
    ) -> builtins.list[Artifact]:
        """A run's artifacts, or an experiment's (its comparison figures; its runs' too with
        ``include_runs``), optionally of one ``kind``: ``figure``, ``weights``, ``results``, ``metrics``.
        Every page: a large sweep's list comes in several."""
        items: builtins.list[Artifact] = []
        cursor: str | None = None
        while True:
            data = self._client.request(list_options(experiment_id, run_id, include_runs, cursor))
            items += _filter((Artifact.from_dict(a) for a in data["items"]), kind)
            cursor = data.get("next_cursor")
            if cursor is None:
                return items

    def get(self, artifact_id: str) -> Artifact:
        return Artifact.from_dict(self._client.request(RequestOptions("GET", artifact_path(artifact_id))))

    def download(self, artifact: Artifact | str, *, to: PathLike = ".") -> Path:
        """Save an artifact (or artifact id) to ``to`` (a folder, or a file name); returns the file's path.

        The bytes are checked against the recorded SHA-256 before the file appears.
        """
        record = artifact if isinstance(artifact, Artifact) else self.get(artifact)
        return self._save(record, destination(record, to))

    def download_all(
        self, experiment_id: str, *, to: PathLike, kind: str | None = None, include_runs: bool = True
    ) -> builtins.list[Path]:
        """Every artifact of an experiment (of one ``kind``) under ``to``, runs' files in ``runs/<id>/``."""
        records = self.list(experiment_id=experiment_id, include_runs=include_runs, kind=kind)
        return [self._save(record, layout(record, to)) for record in records]

    def _save(self, artifact: Artifact, target: Path) -> Path:
        options = RequestOptions("GET", artifact_path(artifact.id, "content"), headers={"Accept": "*/*"})
        with self._client.stream(options) as response:
            writer = _Writer(artifact, target)
            try:
                for chunk in response.iter_bytes():
                    writer.write(chunk)
            except BaseException:
                writer.abort()
                raise
        return writer.finish()


class AsyncArtifacts:
    """Artifacts of an :class:`~gni_client.AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(
        self,
        *,
        experiment_id: str | None = None,
        run_id: str | None = None,
        include_runs: bool = False,
        kind: str | None = None,
    ) -> builtins.list[Artifact]:
        items: builtins.list[Artifact] = []
        cursor: str | None = None
        while True:
            data = await self._client.request(list_options(experiment_id, run_id, include_runs, cursor))
            items += _filter((Artifact.from_dict(a) for a in data["items"]), kind)
            cursor = data.get("next_cursor")
            if cursor is None:
                return items

    async def get(self, artifact_id: str) -> Artifact:
        return Artifact.from_dict(
            await self._client.request(RequestOptions("GET", artifact_path(artifact_id)))
        )

    async def download(self, artifact: Artifact | str, *, to: PathLike = ".") -> Path:
        record = artifact if isinstance(artifact, Artifact) else await self.get(artifact)
        return await self._save(record, destination(record, to))

    async def download_all(
        self, experiment_id: str, *, to: PathLike, kind: str | None = None, include_runs: bool = True
    ) -> builtins.list[Path]:
        records = await self.list(experiment_id=experiment_id, include_runs=include_runs, kind=kind)
        return [await self._save(record, layout(record, to)) for record in records]

    async def _save(self, artifact: Artifact, target: Path) -> Path:
        options = RequestOptions("GET", artifact_path(artifact.id, "content"), headers={"Accept": "*/*"})
        async with self._client.stream(options) as response:
            writer = _Writer(artifact, target)
            try:
                async for chunk in response.aiter_bytes():
                    writer.write(chunk)
            except BaseException:
                writer.abort()
                raise
        return writer.finish()
