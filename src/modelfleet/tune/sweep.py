"""The configuration space `profile` sweeps: batch sizes x queue delays x instances x threads.

A max batch size of 1 is dynamic batching off, where a queue delay means nothing: those points
collapse to delay 0. `neighbours` moves one step along one dimension, for the quick search.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet.tune.schema import Settings


def _ascending(name: str, values: tuple[int, ...], low: int) -> tuple[int, ...]:
    if not values:
        raise ValueError(f"{name} needs at least one value")
    if any(v < low for v in values):
        raise ValueError(f"{name} must all be at least {low}, got {list(values)}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class Space:
    batch_sizes: tuple[int, ...]
    delays_us: tuple[int, ...]
    instances: tuple[int, ...]
    threads: tuple[int | None, ...]
    """intra_op_threads values; None alone: the server's default."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", _ascending("--batch-sizes", self.batch_sizes, 1))
        object.__setattr__(self, "delays_us", _ascending("--delays-us", self.delays_us, 0))
        object.__setattr__(self, "instances", _ascending("--instances", self.instances, 1))
        if self.threads != (None,):
            ints = tuple(t for t in self.threads if t is not None)
            object.__setattr__(self, "threads", _ascending("--threads", ints, 1))
        if max(self.instances) > 64:
            raise ValueError(f"--instances go up to 64, got {max(self.instances)}")

    @staticmethod
    def settings(batch: int, delay_us: int, instances: int, threads: int | None) -> Settings:
        return Settings(
            max_batch_size=batch,
            max_queue_delay_us=delay_us if batch > 1 else 0,
            instances=instances,
            intra_op_threads=threads,
        )

    def grid(self) -> list[Settings]:
        """Every distinct configuration, in a stable order."""
        points = (
            self.settings(b, d, i, t)
            for b in self.batch_sizes
            for d in self.delays_us
            for i in self.instances
            for t in self.threads
        )
        return list(dict.fromkeys(points))

    def start(self) -> Settings:
        """Where the quick search starts: the middle batch size, no delay, one instance (or the fewest),
        the most threads: the server's own defaults on a CPU."""
        return self.settings(
            self.batch_sizes[len(self.batch_sizes) // 2],
            self.delays_us[0],
            self.instances[0],
            self.threads[-1],
        )

    def neighbours(self, point: Settings) -> list[Settings]:
        """One step up or down along each dimension (delay only where batching is on)."""
        coords = (point.max_batch_size, point.max_queue_delay_us, point.instances, point.intra_op_threads)
        axes: tuple[tuple[int | None, ...], ...] = (
            self.batch_sizes,
            self.delays_us,
            self.instances,
            self.threads,
        )
        found: list[Settings] = []
        for axis, values in enumerate(axes):
            if axis == 1 and point.max_batch_size == 1:
                continue
            if coords[axis] not in values:
                continue
            index = values.index(coords[axis])
            for step in (-1, 1):
                if 0 <= index + step < len(values):
                    moved = list(coords)
                    moved[axis] = values[index + step]
                    b, d, i, t = moved
                    assert b is not None and d is not None and i is not None
                    candidate = self.settings(b, d, i, t)
                    if candidate != point and candidate not in found:
                        found.append(candidate)
        return found


def default_space(nproc: int) -> Space:
    """Batching off / 8 / 16, no delay / 1 ms, 1 or 2 instances, 1 thread or every core."""
    threads = (1, nproc) if nproc > 1 else (1,)
    return Space(batch_sizes=(1, 8, 16), delays_us=(0, 1000), instances=(1, 2), threads=threads)
