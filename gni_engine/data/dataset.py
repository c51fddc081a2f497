"""The in-memory data set every run trains and is measured on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gni_engine.errors import DataError


@dataclass(frozen=True, eq=False)  # tensors have no single truth value to compare by
class Dataset:
    """Train and test tensors of one data set, with the facts needed to interpret them.

    ``x_*`` have shape ``(N, *input_shape)``. Regression targets ``y_*`` are ``(N, n_outputs)``
    floats; classification targets are ``(N,)`` int64 class ids in ``[0, n_outputs)``. The test
    split may have no rows. ``meta`` holds JSON-serialisable facts (phases drawn, files read,
    standardisation statistics, ...).
    """

    x_train: torch.Tensor  # (N, *input_shape)
    y_train: torch.Tensor  # (N, n_outputs) float | (N,) int64
    x_test: torch.Tensor  # (N_test, *input_shape)
    y_test: torch.Tensor  # (N_test, n_outputs) float | (N_test,) int64
    input_shape: tuple[int, ...]
    n_outputs: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if tuple(x.shape[1:]) != self.input_shape:
                raise DataError(
                    f"{split} inputs have shape {tuple(x.shape)}, expected (N, *{self.input_shape})"
                )
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{split} has {x.shape[0]} inputs but {y.shape[0]} targets")
