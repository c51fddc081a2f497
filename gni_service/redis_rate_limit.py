"""Request-rate budgets kept in Redis, so that every API process draws on the same one per key.

The in-process :class:`~gni_service.limits.RateLimiter` gives each process its own budget: N API
processes let a key make N times its rate. This one keeps one number per key in Redis, the
generic cell rate algorithm's *theoretical arrival time* (TAT), and updates it in one Lua script,
so concurrent processes cannot both spend the last token. With the emission interval
:math:`T = 1/\\text{rate}` and the tolerance :math:`\\tau = \\text{burst}\\cdot T`, a request at
time :math:`t` is granted when

.. math::

    \\max(\\mathrm{TAT}, t) + T - \\tau \\le t,

and then :math:`\\mathrm{TAT} \\leftarrow \\max(\\mathrm{TAT}, t) + T`; otherwise it waits the
difference. That is the token bucket of the in-process limiter (``burst`` at once, ``rate`` per
second after, the same wait when refused), with Redis's clock as the one clock of all processes.
The key expires when its bucket would be full again.

**Fail-open.** Rate limiting protects the service; it must not take it down. When Redis cannot
be reached or does not answer within ``timeout_s`` (connect and reply, no retries), the request
passes, a warning is logged once per outage, and Redis is not asked again for ``recheck_after_s``:
an outage costs one short timeout per ``recheck_after_s``, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gni_service.limits import RequestRateLimiter

log = logging.getLogger("gni.rate_limit")

# KEYS[1]: the key's TAT; ARGV: the emission interval and the tolerance, in microseconds.
# Returns 0 when granted, else the microseconds to wait. Times are integers of microseconds since
# the epoch (≈ 2^51, exact in Lua's doubles); '%d' keeps them integers in the stored string.
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local next_tat = tat + interval
local wait = next_tat - tolerance - now
if wait > 0 then
  return wait
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
"""


class RedisRateLimiter(RequestRateLimiter):
    """``burst`` requests at once and ``rate`` per second after, per key, across every process.

    Fails open (see the module): while Redis is unreachable every request passes.
    """

    blocking = True

    def __init__(
        self,
        url: str,
        rate: float,
        burst: int,
        *,
        key_prefix: str = "gni:rate:",
        timeout_s: float = 0.05,
        recheck_after_s: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(rate, burst)
        self.key_prefix = key_prefix
        self.recheck_after_s = recheck_after_s
        self._interval_us = max(1, round(1e6 / rate)) if rate > 0 else 0
        self._clock = clock or time.monotonic
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._script = self._redis.register_script(GCRA_SCRIPT)
        self._where = _without_password(url)
        self._lock = threading.Lock()
        self._down_until: float | None = None  # set while Redis is taken as unreachable

    def acquire(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        down_until = self._down_until
        if down_until is not None and self._clock() < down_until:
            return 0.0
        try:
            wait_us = self._script(
                keys=[self.key_prefix + key], args=[self._interval_us, self.burst * self._interval_us]
            )
        except redis.RedisError as error:
            self._fail_open(error)
            return 0.0
        if down_until is not None:
            self._recovered()
        return max(0.0, int(wait_us) / 1e6)

    def close(self) -> None:
        self._redis.close()

    def _fail_open(self, error: redis.RedisError) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + self.recheck_after_s
        if first:
            log.warning(
                "rate limit: Redis at %s is unreachable (%s: %s); requests pass without a rate limit, "
                "and Redis is asked again every %g s",
                self._where,
                type(error).__name__,
                error,
                self.recheck_after_s,
            )

    def _recovered(self) -> None:
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = None
        if was_down:
            log.info("rate limit: Redis at %s answers again; rate limits apply", self._where)


def _without_password(url: str) -> str:
    """The URL to log: ``redis://:secret@host:6379/0`` → ``redis://***@host:6379/0``.

    >>> _without_password("redis://user:pw@example:6379/0")
    'redis://***@example:6379/0'
    >>> _without_password("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at and credentials else url
