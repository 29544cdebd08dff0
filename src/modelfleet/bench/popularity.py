"""Which model each request goes to: uniform or Zipf popularity over the model list.

The sequence of model indexes is sampled once, before the run, so the hot path only walks a list.
"""

from __future__ import annotations

import numpy as np

from modelfleet.bench.spec import Popularity


def probabilities(count: int, popularity: Popularity, zipf_s: float = 1.1) -> np.ndarray:
    """P(model at rank k) for k = 1..count: equal, or proportional to 1 / k**s."""
    if count < 1:
        raise ValueError(f"need at least one model, got {count}")
    if popularity is Popularity.UNIFORM:
        weights = np.ones(count)
    else:
        weights = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** zipf_s
    result: np.ndarray = weights / weights.sum()
    return result


def cdf(count: int, popularity: Popularity, zipf_s: float = 1.1) -> np.ndarray:
    """The cumulative distribution over model ranks, ending at exactly 1."""
    result = np.cumsum(probabilities(count, popularity, zipf_s))
    result[-1] = 1.0  # rounding must not leave a gap a uniform draw could fall into
    return result


def sample(cdf_: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` model indexes (0-based ranks) drawn from the distribution `cdf_`."""
    indexes = np.searchsorted(cdf_, rng.random(size), side="right")
    result: np.ndarray = np.minimum(indexes, len(cdf_) - 1)
    return result
