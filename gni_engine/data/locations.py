"""Where data files are looked for: an explicit directory, ``data.data_dir``, or ``$GNI_DATA_DIR``.

Nothing is ever downloaded. A missing file raises :class:`~gni_engine.errors.DataError` naming
every path that was tried and the layout that was expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gni_engine.errors import DataError

DATA_DIR_ENV = "GNI_DATA_DIR"
_HOW_TO_SET = f"set {DATA_DIR_ENV} or data.data_dir"


def resolve_data_dir(explicit: str | Path | None, from_spec: str | None, *, name: str, layout: str) -> Path:
    """The first of ``explicit``, ``from_spec`` and ``$GNI_DATA_DIR`` that is set (read at call time)."""
    for candidate in (explicit, from_spec, os.environ.get(DATA_DIR_ENV)):
        if candidate is not None and str(candidate) != "":
            return Path(candidate).expanduser()
    raise DataError(f"{name}: no data directory given; expected {layout}; pass data_dir or {_HOW_TO_SET}")


def is_file(path: Path, *, name: str) -> bool:
    """Whether ``path`` is a file; a folder that cannot be entered is a :class:`DataError` naming it
    (``Path.is_file`` raises for it instead of answering)."""
    try:
        return path.is_file()
    except OSError as error:
        raise DataError(f"{name}: cannot look for {path}: {error.strerror or error}") from None


def find_file(
    directories: Sequence[Path], filename: str, *, name: str, layout: str, gzipped_ok: bool = False
) -> Path:
    """The first existing ``directory / filename`` (or ``filename.gz`` when ``gzipped_ok``)."""
    names = (filename, f"{filename}.gz") if gzipped_ok else (filename,)
    for directory in directories:
        for candidate in names:
            path = directory / candidate
            if is_file(path, name=name):
                return path
    suffix = "[.gz]" if gzipped_ok else ""
    tried = " or ".join(f"{directory / filename}{suffix}" for directory in directories)
    raise DataError(
        f"{name}: file not found: {tried}; expected {layout}; {_HOW_TO_SET}",
        details={"tried": [str(directory / filename) for directory in directories]},
    )


def first_existing(directories: Sequence[Path], filenames: Sequence[str], *, name: str, layout: str) -> Path:
    """The first file of ``filenames`` found in any of ``directories`` (filenames in order of preference)."""
    for filename in filenames:
        for directory in directories:
            if is_file(directory / filename, name=name):
                return directory / filename
    tried = " or ".join(str(directory / filename) for filename in filenames for directory in directories)
    raise DataError(f"{name}: file not found: {tried}; expected {layout}; {_HOW_TO_SET}")
