"""Per-tenant quotas on inference: a request rate (token bucket) and a number of requests in
flight, from the keys file (server/auth.py). A tenant past either gets 429 with Retry-After at
once, before its request is read or queued, so that a noisy tenant spends its own quota and not
the other tenants' queue places and cores. Event-loop thread only; the clock is injected."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelfleet.errors import Overloaded


@dataclass(frozen=True)
class QuotaConfig:
    """`rate_per_s`: sustained inference requests a second (None: no rate limit); `burst`: how
    many may come at once above it (default: one second's worth); `max_concurrent`: requests in
    flight at once (None: no limit)."""

    rate_per_s: float | None = None
    burst: int | None = None
    max_concurrent: int | None = None


class Quota:
    def __init__(self, tenant: str, config: QuotaConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.tenant = tenant
        self._rate = config.rate_per_s
        self._burst = float(config.burst or math.ceil(config.rate_per_s or 1))
        self._tokens = self._burst
        self._max = config.max_concurrent
        self._clock = clock
        self._stamp = clock()
        self.in_flight = 0
        self.refused = 0

    def enter(self) -> None:
        """Count one request in, or raise 429 with the seconds after which a retry can pass."""
        if self._max is not None and self.in_flight >= self._max:
            self.refused += 1
            raise Overloaded(
                f"tenant '{self.tenant}' has {self.in_flight} requests in flight, its quota is {self._max}"
            )
        if self._rate is not None:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                self.refused += 1
                wait_s = (1.0 - self._tokens) / self._rate
                raise Overloaded(
                    f"tenant '{self.tenant}' is over its quota of {self._rate:g} requests/s",
                    max(1, math.ceil(wait_s)),
                )
            self._tokens -= 1.0
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
