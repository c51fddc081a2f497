"""Domain exceptions shared by the engine, the service and the command line.

The service maps each to one JSON error body ``{"error": {"type", "message", "details"}}``.
"""

from __future__ import annotations

from typing import Any


class GNIError(Exception):
    """Base class of every error this project raises on purpose."""

    error_type = "gni_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class SpecError(GNIError):
    """A run or sweep specification is invalid. ``details`` lists ``{"loc", "msg"}`` per field."""

    error_type = "spec_error"


class DataError(GNIError):
    """A data set cannot be built or read (missing file, wrong layout, bad parameters)."""

    error_type = "data_error"


class DivergenceError(GNIError):
    """Training produced a non-finite loss; ``step`` names the first bad step."""

    error_type = "divergence"

    def __init__(self, message: str, *, step: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.step = step


class CancelledError(GNIError):
    """A run was cancelled cooperatively between two steps."""

    error_type = "cancelled"


class NotFound(GNIError):
    """A requested object does not exist (or belongs to someone else)."""

    error_type = "not_found"


class Conflict(GNIError):
    """A state change conflicts with the object's current state."""

    error_type = "conflict"
