"""Per-tenant quotas on inference: a request rate (token bucket) and a number of requests in
flight, from the keys file (server/auth.py). A tenant past either gets 429 with Retry-After at
once, before its request is read or queued, so that a noisy tenant spends its own quota and not
the other tenants' queue places and cores. Event-loop thread only; the clock is injected.

A refused request's connection can be held (`hold`): the transport reads nothing more from it
until the quota could take a request again — one held connection is let go per token due (rate)
and per request of the tenant that ends (concurrency), oldest first. A flood then costs the
server one refusal per token instead of one per request it can send: the 429 still goes out at
once, and a client that honours Retry-After never notices."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from modelfleet.errors import Overloaded

MAX_HOLD_S = 30.0  # a held connection reads again after 15-45 s at most, whatever its quota says
MAX_HELD = 4096  # connections one tenant may have held at once; past it the oldest goes


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
        self._held: deque[Callable[[], bool]] = deque()  # connections to let go, oldest first
        self._tick: asyncio.TimerHandle | None = None  # the next release by rate

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
        if self._max is not None:
            self._let_go()

    @property
    def held(self) -> int:
        return len(self._held)

    def hold(self, resume: Callable[[], bool]) -> None:
        """Hold a refused client's connection: `resume` is called when a token is due or one of the
        tenant's requests ends; it returns False when there was nothing to let go (the connection
        is gone, or the transport let it go by itself), and the next one is tried."""
        if len(self._held) >= MAX_HELD:
            self._held.popleft()()  # the oldest goes now: held connections stay bounded
        self._held.append(resume)
        if self._rate is not None and self._tick is None:
            missing = 1.0 - min(self._burst, self._tokens + (self._clock() - self._stamp) * self._rate)
            self._tick = asyncio.get_running_loop().call_later(max(0.0, missing / self._rate), self._release)

    def _let_go(self) -> None:
        """Let the oldest held connection that is still held go."""
        while self._held and not self._held.popleft()():
            pass

    def _release(self) -> None:
        """A token is due: let the oldest held connection go; again a token later while any is held."""
        self._tick = None
        self._let_go()
        if self._held and self._rate is not None:
            self._tick = asyncio.get_running_loop().call_later(1.0 / self._rate, self._release)


def hold_timeout_s() -> float:
    """How long a transport holds a connection at most: MAX_HOLD_S spread over 0.5-1.5x, so that
    connections held at once do not all come back at once."""
    return MAX_HOLD_S * (0.5 + random.random())
