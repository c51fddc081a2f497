"""Public identifiers: a short prefix naming the kind of object and 32 random hex digits."""

from __future__ import annotations

import uuid
from typing import Literal

IdKind = Literal["exp", "run", "art"]


def new_id(kind: IdKind) -> str:
    """``exp_…`` for experiments, ``run_…`` for runs, ``art_…`` for artifacts."""
    return f"{kind}_{uuid.uuid4().hex}"
