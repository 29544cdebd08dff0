"""What a closed-loop share records, and the clock that drives it: how many users send at each
moment (the user phases), and whether a stop threshold has been crossed.

Transports (HTTP connections in client.py, gRPC calls in grpcload.py) only call `ok` and `error`
per answer and run a user while `slot < users`; `drive` starts users as the ramp adds them, checks
the thresholds on the answers of the last few seconds, and ends the record early when one is crossed.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from array import array
from collections.abc import Callable
from time import perf_counter_ns

import numpy as np

from modelfleet.bench.messages import ShareJob, ShareResult, StopInfo
from modelfleet.bench.spec import Thresholds, users_at
from modelfleet.bench.stats import percentile

TICK_S = 0.05  # how often the user count is updated (a ramp adds users a few per minute)
CHECK_S = 0.25  # how often the thresholds are checked


def crossed(thresholds: Thresholds, latencies_ns: np.ndarray, errors: int, requests: int) -> StopInfo | None:
    """The first threshold the answers of one window cross (None: none), given their latencies and
    how many failed; `requests` counts the whole record, for `max_requests`."""
    if thresholds.max_requests is not None and requests >= thresholds.max_requests:
        return StopInfo("max_requests", float(requests), float(thresholds.max_requests))
    answered = len(latencies_ns) + errors
    if answered < thresholds.min_answers:
        return None
    if thresholds.error_rate is not None and errors / answered > thresholds.error_rate:
        return StopInfo("error_rate", errors / answered, thresholds.error_rate)
    ms = np.sort(latencies_ns).astype(np.float64) / 1e6
    for name, p, limit in (("p90", 90, thresholds.p90_ms), ("p99", 99, thresholds.p99_ms)):
        if limit is not None and len(ms):
            value = percentile(ms, p)
            if value > limit:
                return StopInfo(name, value, limit)
    return None


class Recorder:
    """One process's closed-loop record: per answer its latency, model and completion time
    (ns from the window's start), per error its kind and time; and the users' clock."""

    def __init__(self, job: ShareJob) -> None:
        self.job = job
        self.latencies = array("q")
        self.models = array("i")
        self.done = array("q")  # completion times of the answers, ns from record_from_ns, ascending
        self.error_times = array("q")
        self.errors: dict[str, int] = {}
        self.model_errors: dict[int, int] = {}
        self.warmup_errors = 0
        self.record_from_ns = self.end_ns = 0
        self.users = 0  # users with slot < users keep sending
        self.running: set[int] = set()  # slots with a user; a transport discards its slot as it ends
        self.stopped: StopInfo | None = None
        self.cpu_s = 0.0
        self._max_requests = job.thresholds.max_requests or 0  # checked per answer: exact, not per tick

    def ok(self, model: int, sent_ns: int, now: int) -> None:
        if self.record_from_ns <= now <= self.end_ns:
            self.latencies.append(now - sent_ns)
            self.models.append(model)
            self.done.append(now - self.record_from_ns)
            if self._max_requests:
                self._count_towards_max(now)

    def _count_towards_max(self, now: int) -> None:
        count = len(self.done) + len(self.error_times)
        if count >= self._max_requests and self.stopped is None:
            at_s = (now - self.record_from_ns) / 1e9
            self.stopped = StopInfo("max_requests", float(count), float(self._max_requests), at_s)
            self.end_ns = now

    def error(self, kind: str, model: int, now: int) -> None:
        if now < self.record_from_ns:
            self.warmup_errors += 1
        elif now <= self.end_ns:
            kind = str(kind)  # a plain str key, not an ErrorKind, for the report
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.error_times.append(now - self.record_from_ns)
            if model >= 0:
                self.model_errors[model] = self.model_errors.get(model, 0) + 1
            if self._max_requests:
                self._count_towards_max(now)

    def _check(self, now: int) -> None:
        thresholds = self.job.thresholds
        since = now - self.record_from_ns - int(thresholds.window_s * 1e9)
        first = bisect.bisect_left(self.done, since)
        window = np.array(self.latencies[first:], dtype=np.int64)
        errors = len(self.error_times) - bisect.bisect_left(self.error_times, since)
        found = crossed(thresholds, window, errors, len(self.latencies) + len(self.error_times))
        if found is not None:
            self.stopped = StopInfo(found.reason, found.value, found.limit, (now - self.record_from_ns) / 1e9)
            self.end_ns = now  # every user stops after its answer in flight

    async def drive(self, start_user: Callable[[int], None]) -> None:
        """Run the clock from now: warm-up at the first phase's users, then the phases; returns
        when the record ends (its time is up or a threshold stopped it)."""
        start = perf_counter_ns()
        self.record_from_ns = start + int(self.job.warmup_s * 1e9)
        self.end_ns = self.record_from_ns + int(self.job.duration_s * 1e9)
        phases, checking = self.job.users, self.job.thresholds.any
        cpu_start: float | None = None
        next_check = self.record_from_ns
        while (now := perf_counter_ns()) < self.end_ns:
            if cpu_start is None and now >= self.record_from_ns:
                cpu_start = time.process_time()
            self.users = users_at(phases, max(0.0, (now - self.record_from_ns) / 1e9))
            for slot in range(self.users):  # users past the count stop after their answer
                if slot not in self.running:
                    self.running.add(slot)
                    start_user(slot)
            if checking and now >= next_check:
                next_check = now + int(CHECK_S * 1e9)
                self._check(now)  # a crossed threshold moves end_ns to now: the loop ends
            await asyncio.sleep(min(TICK_S, max(0, self.end_ns - now) / 1e9))
        self.cpu_s = time.process_time() - (cpu_start if cpu_start is not None else time.process_time())

    def result(self) -> ShareResult:
        return ShareResult(
            latencies_ns=self.latencies.tobytes(),
            model_indexes=self.models.tobytes(),
            errors=self.errors,
            model_errors=self.model_errors,
            warmup_errors=self.warmup_errors,
            cpu_s=self.cpu_s,
            done_ns=self.done.tobytes(),
            error_times_ns=self.error_times.tobytes(),
            recorded_s=max(0, self.end_ns - self.record_from_ns) / 1e9,
            stopped=self.stopped,
        )
