"""Opaque cursors for paginated lists.

A cursor is URL-safe base64 of a small JSON document: the sort key of the last item seen (keyset
pagination, stable under inserts) or, for lists sorted by a computed value, an offset. Clients
treat it as an opaque string; a damaged one is a :class:`SpecError` naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gni_engine.errors import SpecError

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """The position stored in ``cursor``, which must have been made for a list of ``kind``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad_cursor("it is not a cursor this service issued") from None
    if not isinstance(position, dict) or position.get("kind") != kind:
        raise _bad_cursor(f"it was not issued for this list ({kind})")
    return position


def _bad_cursor(reason: str) -> SpecError:
    message = f"invalid cursor: {reason}"
    return SpecError(message, details=[{"loc": "cursor", "msg": message}])
