"""API keys: creating, listing, revoking and checking them, and who owns what.

A key reads ``gni_<id>_<secret>``: ``id`` (12 hex digits) is its visible, listable name and the
owner recorded on the experiments it creates; ``secret`` carries 256 random bits. Only the SHA-256
of the whole key is stored, so the database never holds a usable key, and a fast hash suffices
because the key is high-entropy (no password-style stretching needed).

>>> parse_key("gni_0123456789ab_" + "s" * 43)
'0123456789ab'
>>> parse_key("Basic abc") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from gni_engine.errors import GNIError, NotFound
from gni_service.models import ApiKey, Artifact, Experiment, Run, utcnow

KEY_PREFIX = "gni_"
_KEY = re.compile(r"^gni_([0-9a-f]{12})_([A-Za-z0-9_\-]{20,128})$")


class Unauthenticated(GNIError):
    """No API key, or one that is malformed, unknown or revoked (the message never echoes it)."""

    error_type = "unauthenticated"


@dataclass(frozen=True)
class Principal:
    """Who makes a request: an API key's id, or nobody in particular when authentication is off."""

    owner: str | None

    @property
    def restricted(self) -> bool:
        return self.owner is not None


ANONYMOUS = Principal(owner=None)


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The id of a well-formed key, else None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def create_api_key(session: Session, name: str) -> tuple[KeyInfo, str]:
    """Store a new key (hashed) and return it with its plaintext, shown once and never again."""
    key_id = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(id=key_id, name=name[:200], secret_hash=hash_key(plaintext), created_at=utcnow())
    session.add(record)
    session.flush()
    return _info(record), plaintext


def list_api_keys(session: Session) -> list[KeyInfo]:
    return [_info(k) for k in session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))]


def revoke_api_key(session: Session, key_id: str) -> KeyInfo:
    """Revoke a key by its id; revoking twice is harmless."""
    record = session.get(ApiKey, key_id)
    if record is None:
        raise NotFound(f"no API key with id '{key_id}'")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        session.flush()
    return _info(record)


def _info(record: ApiKey) -> KeyInfo:
    return KeyInfo(record.id, record.name, record.created_at, record.revoked_at)


def authenticate(session: Session | Connection, authorization: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer <key>`` header, or :class:`Unauthenticated`."""
    if not authorization:
        raise Unauthenticated("this API needs a key: send 'Authorization: Bearer <key>'")
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthenticated("use the Bearer scheme: 'Authorization: Bearer <key>'")
    presented = presented.strip()
    key_id = parse_key(presented)
    if key_id is None:
        raise Unauthenticated("malformed API key")
    record = session.execute(select(ApiKey.secret_hash, ApiKey.revoked_at).where(ApiKey.id == key_id)).first()
    # Compare digests in constant time; an unknown id costs the same hash as a known one.
    expected = record.secret_hash if record is not None else hash_key("")
    if not hmac.compare_digest(expected, hash_key(presented)) or record is None:
        raise Unauthenticated("invalid API key")
    if record.revoked_at is not None:
        raise Unauthenticated("this API key has been revoked")
    return Principal(owner=key_id)


# --------------------------------------------------------------------------------- ownership
def check_experiment_owner(session: Session, experiment_id: str, principal: Principal) -> None:
    """Another owner's experiment does not exist, as far as this principal can tell (404)."""
    if not principal.restricted:
        return
    owner = session.scalar(select(Experiment.owner).where(Experiment.id == experiment_id))
    if owner != principal.owner:
        raise NotFound(f"no experiment with id '{experiment_id}'")


def check_run_owner(session: Session, run_id: str, principal: Principal) -> None:
    if not principal.restricted:
        return
    owner = session.scalar(
        select(Experiment.owner).join(Run, Run.experiment_id == Experiment.id).where(Run.id == run_id)
    )
    if owner != principal.owner:
        raise NotFound(f"no run with id '{run_id}'")


def check_artifact_owner(session: Session, artifact_id: str, principal: Principal) -> None:
    if not principal.restricted:
        return
    owner = session.scalar(
        select(Experiment.owner)
        .join(Artifact, Artifact.experiment_id == Experiment.id)
        .where(Artifact.id == artifact_id)
    )
    if owner != principal.owner:
        raise NotFound(f"no artifact with id '{artifact_id}'")
