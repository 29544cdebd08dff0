"""The machine's cores shared between models: at most `slots` model runs execute at once, and
models waiting for a slot take turns by the run time each has used (start-time fair queueing).

Without it every executor thread runs as soon as it has work, and two models whose runtimes each
use every core (ONNX Runtime's default intra-op threads) slow each other down by oversubscription,
whoever sent the work: a tenant flooding its own model takes the cores from everyone else's.
With a share, a run waits for a slot; the next slot goes to the waiting model with the smallest
start tag, max(virtual time, the model's last finish tag), where a finish tag adds the run's
measured nanoseconds. A model that used little lately is served before one that used much, and a
model idle for a while gets no credit for it (the virtual time has moved on).

Executor threads call `acquire` / `release` around each run (blocking calls, never on the loop).
"""

from __future__ import annotations

import heapq
import itertools
import threading


class ComputeShare:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a compute share needs at least one slot, got {slots}")
        self.slots = slots
        self._cond = threading.Condition()
        self._busy = 0
        self._virtual = 0.0  # the start tag of the latest run to begin
        self._finish: dict[str, float] = {}  # flow -> finish tag of its last run
        self._waiting: list[tuple[float, int, str]] = []  # heap of (start tag, arrival, flow)
        self._arrivals = itertools.count()

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def acquire(self, flow: str) -> float:
        """Block until `flow` (a model) may run; returns its start tag, for `release`."""
        with self._cond:
            start = max(self._virtual, self._finish.get(flow, 0.0))
            if self._busy < self.slots and not self._waiting:
                return self._begin(start)
            entry = (start, next(self._arrivals), flow)
            heapq.heappush(self._waiting, entry)
            while self._busy >= self.slots or self._waiting[0] is not entry:
                self._cond.wait()
            heapq.heappop(self._waiting)
            if self._waiting and self._busy + 1 < self.slots:
                self._cond.notify_all()  # a slot is still free: the next in line may go too
            return self._begin(start)

    def release(self, flow: str, start: float, elapsed_ns: float) -> None:
        """The run that began at `start` took `elapsed_ns`: charge it to `flow`, free the slot."""
        with self._cond:
            self._busy -= 1
            self._finish[flow] = max(self._finish.get(flow, 0.0), start + max(elapsed_ns, 1.0))
            if self._waiting:
                self._cond.notify_all()

    def forget(self, flow: str) -> None:
        """A model went away: drop its tag (a model loaded again under the name starts afresh)."""
        with self._cond:
            self._finish.pop(flow, None)

    def _begin(self, start: float) -> float:
        self._busy += 1
        self._virtual = max(self._virtual, start)
        return start
