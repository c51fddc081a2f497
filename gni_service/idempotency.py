"""Idempotency keys: a POST repeated with the same ``Idempotency-Key`` gets the first answer again.

The answer is stored in the same transaction as the change it describes, so a retried request
either finds both or neither; the same key with a different request is a :class:`IdempotencyConflict`.

>>> first = request_hash("POST", "/v1/x", "", b'{"b": 1, "a": 2}')
>>> first == request_hash("POST", "/v1/x", "", b'{"a":2,"b":1}')
True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from gni_engine.errors import Conflict
from gni_service.models import IdempotencyRecord, utcnow

MAX_KEY_LENGTH = 200


class IdempotencyConflict(Conflict):
    """The key was first used for another request (another body, path or query)."""

    error_type = "idempotency_conflict"


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: dict[str, Any]


def request_hash(method: str, path: str, query: str, body: bytes) -> str:
    """SHA-256 of the request; a JSON body counts by its content, not its spacing or key order."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def find_response(session: Session, owner: str, key: str, hash_: str) -> StoredResponse | None:
    """The stored answer of ``key``, None when the key is new; raises when it named another request."""
    record = session.get(IdempotencyRecord, (owner, key))
    if record is None:
        return None
    if record.request_hash != hash_:
        message = "this Idempotency-Key was already used with a different request; use a new key"
        raise IdempotencyConflict(message, details={"idempotency_key": key})
    return StoredResponse(record.status_code, record.response_body)


def prune_responses(session: Session, older_than: datetime) -> int:
    """Delete the stored answers made before ``older_than``; how many. Safe to run anywhere, any
    number of times at once: a key older than that is new again for whoever sends it."""
    result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)


def record_response(
    session: Session, owner: str, key: str, hash_: str, status_code: int, body: dict[str, Any]
) -> None:
    """Add the answer to the session; the caller's commit stores it with the change it describes."""
    session.add(
        IdempotencyRecord(
            owner=owner,
            key=key,
            request_hash=hash_,
            status_code=status_code,
            response_body=body,
            created_at=utcnow(),
        )
    )
