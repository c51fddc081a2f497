"""Seeded randomness, train/test splits, subsets and train-statistics standardisation.

Every random draw of a data set comes from a generator of its own *stream* (``"split"``,
``"sinusoids.phases"``, ...) derived from the run's data seed, so the data depend on the data spec
and the seed alone, and changing one option (say the phases) leaves the other draws (the split)
unchanged.

>>> a, b = split_indices(8, 0.25, data_generator(0, "split"))
>>> sorted(a.tolist() + b.tolist()) == list(range(8)), len(b)
(True, 2)
"""

from __future__ import annotations

import hashlib

import torch

from gni_engine.errors import DataError

_SEED_MASK = 2**63 - 1


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one named stream: the first 8 bytes of ``sha256("gni-data:{seed}:{stream}")``.

    Platform- and version-independent (unlike Python's ``hash``), and in ``[0, 2**63)``.
    """
    digest = hashlib.sha256(f"gni-data:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & _SEED_MASK


def data_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`stream_seed`."""
    return torch.Generator(device="cpu").manual_seed(stream_seed(seed, stream))


def held_out_count(n: int, test_fraction: float) -> int:
    """``round(n · test_fraction)`` test points; at least 1 and at most ``n - 1`` when the fraction is > 0."""
    if test_fraction <= 0.0:
        return 0
    if n < 2:
        raise DataError(f"cannot hold out a test split from {n} point(s)")
    return min(max(round(n * test_fraction), 1), n - 1)


def split_indices(
    n: int, test_fraction: float, generator: torch.Generator, *, keep_order: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train and test indices of ``n`` points; ``held_out_count(n, test_fraction)`` go to test.

    With ``keep_order`` both index sets are ascending (so a grid stays in grid order); otherwise
    they are in random order, which also shuffles the points.
    """
    perm = torch.randperm(n, generator=generator)  # (n,)
    n_test = held_out_count(n, test_fraction)
    test, train = perm[:n_test], perm[n_test:]
    if keep_order:
        return torch.sort(train).values, torch.sort(test).values
    return train, test


def subset_indices(n: int, keep: int | None, generator: torch.Generator) -> torch.Tensor:
    """Ascending indices of a uniformly random subset of at most ``keep`` of ``n`` points."""
    if keep is None or keep >= n:
        return torch.arange(n)
    return torch.sort(torch.randperm(n, generator=generator)[:keep]).values


def standardise(
    train: torch.Tensor, test: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Standardise columns with the *training* statistics only.

    .. math::

        z = (x - \mu) / s, \quad \mu = \tfrac{1}{N}\sum_i x_i, \quad s^2 = \tfrac{1}{N}\sum_i (x_i - \mu)^2

    over the N training rows. A constant column (``s = 0``) is only centred.
    Returns ``(train_z, test_z, mean, std)``.
    """
    mean = train.mean(dim=0)  # (D,)
    std = train.std(dim=0, correction=0)  # (D,)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std, mean, std
