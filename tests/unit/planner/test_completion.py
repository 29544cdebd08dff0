"""Bin completion for large items: feasible by construction, and close to the volume."""

from __future__ import annotations

import math

import numpy as np

from modelfleet.planner.completion import pack_large


def first_fit_decreasing(sizes: np.ndarray) -> int:
    free: list[float] = []
    for x in sorted(sizes.tolist(), reverse=True):
        for i, room in enumerate(free):
            if room >= x:
                free[i] -= x
                break
        else:
            free.append(1.0 - x)
    return len(free)


def test_every_item_once_and_every_instance_within_capacity() -> None:
    rng = np.random.default_rng(0)
    frac = np.stack([rng.uniform(0.15, 0.35, 1500), rng.uniform(0.0, 0.2, 1500)], axis=1)
    bins, left = pack_large(frac)
    assert not left
    assert sorted(i for b in bins for i in b) == list(range(1500))
    for b in bins:
        assert (frac[b].sum(axis=0) <= 1.0 + 1e-9).all()


def test_large_items_pack_close_to_their_volume_and_beat_first_fit_decreasing() -> None:
    rng = np.random.default_rng(1)
    sizes = rng.uniform(0.15, 0.35, 2000)
    bins, _ = pack_large(sizes[:, None])
    volume = math.ceil(sizes.sum())
    assert len(bins) <= 1.03 * volume
    assert len(bins) < first_fit_decreasing(sizes) - 10  # 510 against 523 (volume 500.5)


def test_a_limit_leaves_the_rest() -> None:
    sizes = np.full((10, 1), 0.5)
    bins, left = pack_large(sizes, limit=3)
    assert [len(b) for b in bins] == [2, 2, 2]
    assert len(left) == 4
