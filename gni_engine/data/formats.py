"""Readers of the standard file formats of the image data sets, each validating what it reads.

- IDX (MNIST, Fashion-MNIST), optionally gzipped: two zero bytes, a type code, the number of
  dimensions ``r``, ``r`` big-endian uint32 sizes, then the values in C order.
- Python pickles (CIFAR-10's batches), read by :class:`RestrictedUnpickler`, which builds only
  dicts, lists, strings, bytes, ints and numpy arrays: a pickle naming any other global is refused.
- MATLAB ``.mat`` files (SVHN), read by ``scipy.io.loadmat``.

A file that cannot be read raises :class:`~gni_engine.errors.DataError` naming it and the defect.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gni_engine.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is named ``*.gz`` or starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error}") from None
    if path.suffix != ".gz" and not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a valid gzip file: {error}") from None


def parse_idx(raw: bytes, source: str) -> npt.NDArray[Any]:
    """Parse IDX bytes into an array in native byte order, checking the header against the size."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataError(f"{source}: not an IDX file (the magic number must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise DataError(f"{source}: unknown IDX type code 0x{code:02x}")
    dtype = IDX_TYPES[code]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataError(f"{source}: IDX header truncated (declares {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:header_end])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: a corrupt header cannot wrap to 0
    if len(raw) - header_end != expected:
        raise DataError(
            f"{source}: IDX header declares shape {dims} ({expected} data bytes) "
            f"but the file holds {len(raw) - header_end} data bytes"
        )
    values = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header_end)
    return values.reshape(dims).astype(dtype.newbyteorder("="))  # a writable native-order copy


def read_idx(path: Path) -> npt.NDArray[Any]:
    """Read an IDX file (``*.gz`` or plain)."""
    return parse_idx(read_bytes(path), str(path))


# ------------------------------------------------------------------------------------ pickles
class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle named a global that :class:`RestrictedUnpickler` does not resolve."""


def _latin1_encode(text: object, encoding: object) -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocol-2 pickles rebuild ``bytes``; nothing else."""
    if not isinstance(encoding, str) or encoding.replace("-", "").replace("_", "").lower() not in {
        "latin1",
        "iso88591",
    }:
        raise ForbiddenGlobal(f"_codecs.encode with encoding {encoding!r} is not allowed")
    if not isinstance(text, str):
        raise ForbiddenGlobal("_codecs.encode of a non-string is not allowed")
    return text.encode("latin-1")


_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
} | {
    (module, builtin.__name__): builtin
    for module in ("builtins", "__builtin__")
    for builtin in (dict, list, bytes, str, int)
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a numpy-array data batch needs.

    Anything else (``os.system``, ``builtins.eval``, arbitrary classes) raises
    :class:`ForbiddenGlobal` before it is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise ForbiddenGlobal(f"global {module}.{name} is not allowed in a data file")
        return allowed


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle a data file with :class:`RestrictedUnpickler` (Python-2 strings come back as bytes)."""
    raw = read_bytes(path)
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except ForbiddenGlobal as error:
        raise DataError(f"{path}: refused to unpickle: {error}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        struct.error,
    ) as error:
        raise DataError(f"{path}: corrupt pickle: {type(error).__name__}: {error}") from None
    except MemoryError:  # a crafted file asking for a huge array or byte string
        raise DataError(f"{path}: the pickle asks for more memory than there is (not a data batch)") from None


# ---------------------------------------------------------------------------------- .mat files
def load_mat(path: Path) -> dict[str, Any]:
    """Read a MATLAB v4/v5 ``.mat`` file into a dict of arrays."""
    from scipy.io import loadmat  # deferred: scipy.io is slow to import and only SVHN needs it
    from scipy.io.matlab import MatReadError

    try:
        return dict(loadmat(str(path)))
    except NotImplementedError as error:  # MATLAB v7.3 (HDF5) files
        raise DataError(f"{path}: unsupported .mat version: {error}") from None
    except (MatReadError, ValueError, TypeError, OSError, EOFError, struct.error, zlib.error) as error:
        raise DataError(f"{path}: cannot read .mat file: {type(error).__name__}: {error}") from None
    except MemoryError:
        raise DataError(f"{path}: the .mat file asks for more memory than there is") from None
