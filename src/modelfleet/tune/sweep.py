"""The configuration space `profile` sweeps: batch sizes x queue delays x instances x threads.

A max batch size of 1 is dynamic batching off, where a queue delay means nothing: those points
collapse to delay 0. `neighbours` moves one step along one dimension and `trades` shifts cores
between instances and threads, for the quick search, which skips the points that leave cores idle
(`idle`).
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
    buckets: tuple[tuple[int, ...] | None, ...] = (None,)
    """shape_buckets sizes to try; () is no buckets; None alone: config.yaml's, not swept."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", _ascending("--batch-sizes", self.batch_sizes, 1))
        object.__setattr__(self, "delays_us", _ascending("--delays-us", self.delays_us, 0))
        object.__setattr__(self, "instances", _ascending("--instances", self.instances, 1))
        if self.threads != (None,):
            ints = tuple(t for t in self.threads if t is not None)
            object.__setattr__(self, "threads", _ascending("--threads", ints, 1))
        if not self.buckets:
            raise ValueError("--buckets needs at least one value")
        for sizes in self.buckets:
            if sizes is not None and (list(sizes) != sorted(set(sizes)) or (sizes and sizes[0] < 1)):
                raise ValueError(f"--buckets sizes must be positive and ascending, got {list(sizes)}")
        if max(self.instances) > 64:
            raise ValueError(f"--instances go up to 64, got {max(self.instances)}")

    @staticmethod
    def settings(
        batch: int, delay_us: int, instances: int, threads: int | None, buckets: tuple[int, ...] | None = None
    ) -> Settings:
        return Settings(
            max_batch_size=batch,
            max_queue_delay_us=delay_us if batch > 1 else 0,
            instances=instances,
            intra_op_threads=threads,
            shape_buckets=buckets,
        )

    def grid(self) -> list[Settings]:
        """Every distinct configuration, in a stable order."""
        points = (
            self.settings(b, d, i, t, s)
            for b in self.batch_sizes
            for d in self.delays_us
            for i in self.instances
            for t in self.threads
            for s in self.buckets
        )
        return list(dict.fromkeys(points))

    def start(self) -> Settings:
        """Where the quick search starts: the middle batch size, no delay, one instance (or the fewest),
        the most threads: the server's own defaults on a CPU; the last bucket set given."""
        return self.settings(
            self.batch_sizes[len(self.batch_sizes) // 2],
            self.delays_us[0],
            self.instances[0],
            self.threads[-1],
            self.buckets[-1],
        )

    def neighbours(self, point: Settings) -> list[Settings]:
        """One step up or down along each dimension (delay only where batching is on); every other
        bucket set (they have no order)."""
        coords = (
            point.max_batch_size,
            point.max_queue_delay_us,
            point.instances,
            point.intra_op_threads,
            point.shape_buckets,
        )
        axes: tuple[tuple[int | tuple[int, ...] | None, ...], ...] = (
            self.batch_sizes,
            self.delays_us,
            self.instances,
            self.threads,
            self.buckets,
        )
        found: list[Settings] = []
        for axis, values in enumerate(axes):
            if (axis == 1 and point.max_batch_size == 1) or coords[axis] not in values:
                continue
            index = values.index(coords[axis])
            steps = [j - index for j in range(len(values)) if j != index] if axis == 4 else [-1, 1]
            for step in steps:
                if 0 <= index + step < len(values):
                    moved = list(coords)
                    moved[axis] = values[index + step]
                    candidate = self._point(moved)
                    if candidate != point and candidate not in found:
                        found.append(candidate)
        return found

    def trades(self, point: Settings) -> list[Settings]:
        """One instance more with one thread fewer, and back: the same cores split another way.
        Coordinate moves alone cannot make this trade without passing through an oversubscribed
        (or an idle) point, which the search would not step onto."""
        if point.instances not in self.instances or point.intra_op_threads not in self.threads:
            return []
        i, t = self.instances.index(point.instances), self.threads.index(point.intra_op_threads)
        found = []
        for di, dt in ((1, -1), (-1, 1)):
            if 0 <= i + di < len(self.instances) and 0 <= t + dt < len(self.threads):
                found.append(
                    self.settings(
                        point.max_batch_size,
                        point.max_queue_delay_us,
                        self.instances[i + di],
                        self.threads[t + dt],
                        point.shape_buckets,
                    )
                )
        return found

    def idle(self, point: Settings) -> bool:
        """The fewest instances with fewer intra-op threads than the most, where more instances are
        swept: cores left idle that another instance or more threads would use. The quick search
        does not step there: in the 13 brute-force runs of issue 13 on 2 cores (docs/benchmarks.md,
        26 sequence lengths), the best such point carried 48-66 % of the best throughput at the SLO."""
        return (
            len(self.instances) > 1
            and self.threads != (None,)
            and point.instances == self.instances[0]
            and point.intra_op_threads != self.threads[-1]  # ascending: the most
        )

    def moves(self, point: Settings) -> list[Settings]:
        """Where the quick search may step from `point`: its neighbours, then its trades, less the
        idle points (`idle`)."""
        near = self.neighbours(point)
        return [p for p in near + [t for t in self.trades(point) if t not in near] if not self.idle(p)]

    def _point(self, coords: list[int | tuple[int, ...] | None]) -> Settings:
        b, d, i, t, s = coords
        assert isinstance(b, int) and isinstance(d, int) and isinstance(i, int)
        assert t is None or isinstance(t, int)
        assert s is None or isinstance(s, tuple)
        return self.settings(b, d, i, t, s)


def default_space(nproc: int) -> Space:
    """Batching off / 8 / 16, no delay / 1 ms, 1 or 2 instances, 1 thread or every core."""
    threads = (1, nproc) if nproc > 1 else (1,)
    return Space(batch_sizes=(1, 8, 16), delays_us=(0, 1000), instances=(1, 2), threads=threads)
