"""Explicit random streams derived from a run's seed.

Every random draw of a run (initial weights, noise, data order, Monte-Carlo analyses) takes its own
``torch.Generator`` whose seed is derived from the run seed and the stream's purpose, so streams
never interfere and a run is reproducible and resumable from its generator states.

>>> derive_seed(0, "noise") == derive_seed(0, "noise") != derive_seed(0, "init")
True
"""

from __future__ import annotations

import hashlib

import torch

STREAMS = ("init", "noise", "shuffle", "analysis", "data")


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` from the run seed (SHA-256 based, platform independent)."""
    digest = hashlib.sha256(f"gni/{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_generator(seed: int, purpose: str, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, purpose))
    return generator
