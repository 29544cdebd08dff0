"""Latency and throughput of the compiled model on this machine, per shape bucket and batch size.

Each cell runs the model in-process on generated token ids until `seconds` pass (at least
`MIN_RUNS` runs after one warm-up); the median run time is its latency, rows / median its throughput.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_RUNS = 3
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Cell:
    seq_len: int  # 0: feature rows, no sequence axis
    batch_size: int
    runs: int
    latency_ms: float  # median
    throughput_per_s: float  # rows per second at the median

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def profile(
    run: Runner,
    seq_lens: Sequence[int],
    batch_sizes: Sequence[int],
    vocab_size: int,
    seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Cell]:
    """Token models: random ids [batch, seq] per shape bucket and batch size."""
    rng = np.random.default_rng(0)
    cells = []
    for seq in seq_lens:
        for batch in batch_sizes:
            ids = rng.integers(1, max(vocab_size, 2), (batch, seq)).astype(np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            cells.append(_cell(run, feeds, seq, batch, seconds, clock))
    return cells


def profile_rows(
    run: Runner,
    input_name: str,
    features: int,
    batch_sizes: Sequence[int],
    seconds: float,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Cell]:
    """Feature-row models (scikit-learn and the like): standard-normal FP32 [batch, features];
    the cells' seq_len is 0 (no sequence axis)."""
    rng = np.random.default_rng(0)
    return [
        _cell(
            run, {input_name: rng.normal(size=(batch, features)).astype(np.float32)}, 0, batch, seconds, clock
        )
        for batch in batch_sizes
    ]


def _cell(
    run: Runner,
    feeds: dict[str, np.ndarray],
    seq: int,
    batch: int,
    seconds: float,
    clock: Callable[[], float],
) -> Cell:
    run(feeds)  # warm-up: first-run allocations and kernel choice
    times: list[float] = []
    deadline = clock() + seconds
    while len(times) < MIN_RUNS or clock() < deadline:
        start = clock()
        run(feeds)
        times.append(clock() - start)
    median = statistics.median(times)
    return Cell(seq, batch, len(times), round(median * 1e3, 3), round(batch / median, 1))


def best_batch(cells: Sequence[Cell]) -> int:
    """The batch size with the highest throughput at the longest sequence profiled."""
    longest = max(c.seq_len for c in cells)
    return max((c for c in cells if c.seq_len == longest), key=lambda c: c.throughput_per_s).batch_size
