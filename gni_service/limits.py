"""Limits on what one request, and one API key, may ask of the service.

Each limit comes from the settings and is refused with an error naming the limit and the value
asked for: a run too large (steps, network parameters, data points) is a 422 (:class:`LimitExceeded`);
too many active runs or requests per key is a 429 (:class:`TooManyRequests`) with the seconds to
wait before retrying.
"""

from __future__ import annotations

import json
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gni_engine.errors import GNIError, SpecError
from gni_engine.spec import ConvNetSpec, RunSpec
from gni_engine.sweep import SweepSpec, expand_sweep
from gni_service.models import ACTIVE_STATUSES, Experiment, Run
from gni_service.settings import ServiceSettings

# Axes under these spec fields change a run's size; the others (seed, noise, mode…) do not.
SIZE_FIELDS = ("model", "data", "training")


class LimitExceeded(GNIError):
    """A run or request is larger than this service accepts (422)."""

    error_type = "limit_exceeded"


class TooManyRequests(GNIError):
    """A key made too many requests, or has too many runs active; retry after ``retry_after_s``."""

    error_type = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: float, details: object = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


def _exceeded(limit: str, value: int, maximum: int, loc: str) -> LimitExceeded:
    message = f"{loc}: {value} exceeds the limit {limit}={maximum}"
    return LimitExceeded(
        message, details=[{"loc": loc, "msg": message, "limit": limit, "value": value, "max": maximum}]
    )


def parameter_count(spec: RunSpec) -> int:
    """Weights and biases of the run's network (the input and output sizes follow its data)."""
    from gni_engine.data import input_output_dims  # torch: imported with the first request

    input_shape, n_outputs = input_output_dims(spec)
    n_in = math.prod(input_shape)
    if isinstance(spec.model, ConvNetSpec):
        c1, c2 = spec.model.channels
        k = spec.model.kernel_size**2
        return c1 * (k * input_shape[0] + 1) + c2 * (k * c1 + 1) + c2 * n_in + n_outputs
    dims = [n_in, *spec.model.hidden, n_outputs]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))


def data_points(spec: RunSpec) -> int | None:
    for name in ("n_points", "subset"):
        value = getattr(spec.data, name, None)
        if isinstance(value, int):
            return value
    return None


def check_run_spec(spec: RunSpec, settings: ServiceSettings, prefix: str = "base") -> None:
    if spec.training.steps > settings.max_run_steps:
        raise _exceeded(
            "max_run_steps", spec.training.steps, settings.max_run_steps, f"{prefix}.training.steps"
        )
    params = parameter_count(spec)
    if params > settings.max_model_parameters:
        raise _exceeded("max_model_parameters", params, settings.max_model_parameters, f"{prefix}.model")
    points = data_points(spec)
    if points is not None and points > settings.max_data_points:
        raise _exceeded("max_data_points", points, settings.max_data_points, f"{prefix}.data")


def check_server_paths(spec: RunSpec, coords: dict[str, object]) -> None:
    """Refuse a spec that names a folder of the server: data sets come from its GNI_DATA_DIR only.

    ``data.data_dir`` is for the local command line; through the API it would let any caller make the
    service (or a worker) open files of its choosing and read parts of them back in a run's error.
    """
    if getattr(spec.data, "data_dir", None) is None:
        return
    axis = next((p for p in coords if p == "data" or p.startswith("data.")), None)
    loc = f"axes.{axis}" if axis else "base.data.data_dir"
    message = f"{loc}: data_dir is not accepted by the service; its data sets are read from GNI_DATA_DIR"
    raise SpecError(message, details=[{"loc": loc, "msg": message}])


def size_variants(sweep: SweepSpec) -> Iterable[tuple[dict[str, object], RunSpec]]:
    """One spec (with its coordinates) per combination of the axes that change a run's size
    (usually just the base)."""
    sized = {p: v for p, v in sweep.axes.items() if p.split(".", 1)[0] in SIZE_FIELDS}
    if not sized:
        return [({}, sweep.base)]
    try:
        return expand_sweep(SweepSpec(base=sweep.base, axes=sized))
    except (SpecError, ValueError):
        # These axes alone make an invalid spec (another axis completes it): check every run.
        return expand_sweep(sweep)


def check_sweep(sweep: SweepSpec, settings: ServiceSettings) -> None:
    """Refuse a sweep too large, or whose runs break a per-run limit; expands only the size axes.

    A limit a run breaks because of an axis value is named at that axis (``axes.model.hidden``)."""
    size = sweep.size()
    if size > settings.max_sweep_runs:
        message = (
            f"the sweep expands to {size} runs; this service accepts at most {settings.max_sweep_runs} "
            "per experiment (limit max_sweep_runs)"
        )
        maximum = settings.max_sweep_runs
        details = [{"loc": "axes", "msg": message, "limit": "max_sweep_runs", "value": size, "max": maximum}]
        raise LimitExceeded(message, details=details)
    for coords, spec in size_variants(sweep):
        check_server_paths(spec, coords)
        try:
            check_run_spec(spec, settings)
        except LimitExceeded as error:
            raise _at_axis(error, coords) from None


def _at_axis(error: LimitExceeded, coords: dict[str, object]) -> LimitExceeded:
    """The error moved from ``base.<field>`` to the axis that set that field, if one did."""
    detail = dict(error.details[0])  # type: ignore[index]
    field = str(detail["loc"]).removeprefix("base.")
    axis = next(
        (p for p in coords if p == field or p.startswith(field + ".") or field.startswith(p + ".")), None
    )
    if axis is None:
        return error
    where = f"axes.{axis}"
    value = json.dumps(coords[axis])
    message = f"{where}={value}: {detail['value']} exceeds the limit {detail['limit']}={detail['max']}"
    return LimitExceeded(message, details=[{**detail, "loc": where, "msg": message}])


def check_active_runs(
    session: Session, owner: str | None, new_runs: int, settings: ServiceSettings, *, stored: bool = False
) -> None:
    """Refuse a submission that would leave ``owner`` with too many queued and running runs.

    ``stored``: the ``new_runs`` are already in the session (queued), so they are among those counted.
    """
    active = session.scalar(
        select(func.count())
        .select_from(Run)
        .join(Experiment, Run.experiment_id == Experiment.id)
        .where(
            Experiment.owner.is_(None) if owner is None else Experiment.owner == owner,
            Run.status.in_([s.value for s in ACTIVE_STATUSES]),
        )
    )
    active = int(active or 0) - (new_runs if stored else 0)
    limit = settings.max_active_runs_per_key
    if active + new_runs > limit:
        message = (
            f"this key has {active} queued or running runs and asked for {new_runs} more; "
            f"the limit max_active_runs_per_key is {limit}"
        )
        details = {"limit": "max_active_runs_per_key", "max": limit, "active": active, "requested": new_runs}
        raise TooManyRequests(message, retry_after_s=30.0, details=details)


class RequestRateLimiter(ABC):
    """A request-rate budget per key: ``burst`` requests at once, ``rate`` per second after.

    :class:`RateLimiter` keeps the budgets in this process (the embedded mode: one API process);
    ``gni_service.redis_rate_limit.RedisRateLimiter`` keeps them in Redis, shared by every API
    process. :func:`build_rate_limiter` picks one from the settings.
    """

    #: True when :meth:`acquire` waits on the network: call it off the event loop.
    blocking = False

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst

    @abstractmethod
    def acquire(self, key: str) -> float:
        """Take one request from ``key``'s budget: 0.0 when granted, else the seconds to wait."""

    def check(self, key: str) -> None:
        """Take one request from ``key``'s budget, or raise :class:`TooManyRequests` (429)."""
        wait = self.acquire(key)
        if wait > 0:
            message = f"rate limit: at most {self.rate:g} requests per second (burst {self.burst}) per key"
            details = {"limit": "rate_limit_per_s", "max": self.rate, "burst": self.burst}
            raise TooManyRequests(message, retry_after_s=wait, details=details)

    def close(self) -> None:  # noqa: B027 - a no-op unless the limiter holds connections
        """Release what the limiter holds open (connections); by default nothing."""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter(RequestRateLimiter):
    """A token bucket per key, in this process: ``burst`` requests at once, ``rate`` per second after.

    >>> limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: 0.0)
    >>> limiter.acquire("k"), limiter.acquire("k"), limiter.acquire("k")
    (0.0, 0.0, 1.0)
    """

    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] | None = None) -> None:
        super().__init__(rate, burst)
        self._clock = clock or time.monotonic
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.MAX_KEYS:
                    self._buckets.clear()  # bounded memory; at worst a burst is granted again
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def build_rate_limiter(settings: ServiceSettings) -> RequestRateLimiter:
    """Shared budgets in Redis when the settings name one, else a budget per process."""
    url = settings.resolved_rate_limit_redis_url
    if url is None:
        return RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    from gni_service.redis_rate_limit import RedisRateLimiter

    return RedisRateLimiter(
        url,
        settings.rate_limit_per_s,
        settings.rate_limit_burst,
        key_prefix=f"{settings.broker_key_prefix}gni:rate:",
        timeout_s=settings.rate_limit_redis_timeout_s,
    )
