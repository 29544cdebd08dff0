"""Issue 13: the quick search replayed on the brute-force runs in tests/unit/tune/data, for several
budgets, without and with measurement noise. Offline: it measures nothing, it reads the runs.

    python benchmarks/quick_replay.py [--budgets 8,9,10,12,20] [--trials 400] [--noise 0.14]

Replays: each run's surface as measured (a configuration's capacity is its ramp's, as profile.json
reads it); the share of the run's best that the quick search finds at each length (sequence 128
starting from 32's choice, as `profile` does) and how many configurations it measured.

With noise: the "true" surface is the mean over the runs of each configuration's capacity (each run
scaled by its five best), and every measurement is that times a normal factor of sd `--noise` (the
runs' spread around their mean: 0.13-0.14 at both lengths); brute force measures every point,
the quick search its own, and each chooses the best it measured after its final steps,
re-measures with a third of the noise (a 10 s window against 2 s): brute force the best, and the
next when the best falls under it (`ramp.FINAL_CONFIGS`), the quick search the best only. The quality is the true
capacity of quick's choice over brute force's, as `tune_pair.py`'s referee measures it, with 3 %
of referee noise.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
from collections.abc import Callable
from pathlib import Path

from modelfleet.tune.schema import Measurement, Settings, Slo, Step
from modelfleet.tune.search import Measure, Searched, brute, quick, score
from modelfleet.tune.sweep import default_space

DATA = json.loads((Path(__file__).parents[1] / "tests/unit/tune/data/issue13-brute.json").read_text())
SLO = Slo(p90_ms=DATA["slo_p90_ms"])
SPACE = default_space(2)
GRID = {s.name: s for s in SPACE.grid()}
LENGTHS = (32, 128)


def measured(settings: Settings, seq_len: int, ramp: list[list[float]]) -> Measurement:
    steps = [
        Step(concurrency=int(c), requests=100, errors=0, throughput_per_s=t, p50_ms=p / 2, p90_ms=p, p99_ms=p)
        for c, t, p in ramp
    ]
    return Measurement(
        settings=settings, seq_len=seq_len, steps=steps, load_s=1, memory_bytes=1, stopped="slo"
    )


def capacities(run: str, seq_len: int) -> dict[str, float]:
    surface = DATA["runs"][run][str(seq_len)]
    return {name: score(measured(s, seq_len, surface[name]), SLO) for name, s in GRID.items()}


def replayed(surface: dict[str, list[list[float]]], seq_len: int, calls: list[Settings]) -> Measure:
    """A `measure` that reads each configuration's ramp from `surface`, noting the call."""

    def measure(settings: Settings) -> Measurement:
        calls.append(settings)
        return measured(settings, seq_len, surface[settings.name])

    return measure


def shares(run: str, search: Callable[..., Searched]) -> tuple[list[float], int]:
    """Each length's best found as a share of the run's best (sequence 128 starts where 32 ended,
    as profile does), and how many configurations were measured; `search(space, measure, slo,
    start=...)` is `search.quick` or another search of that shape."""
    found, count, start = [], 0, None
    for seq_len in LENGTHS:
        calls: list[Settings] = []
        best = search(
            SPACE, replayed(DATA["runs"][run][str(seq_len)], seq_len, calls), SLO, start=start
        ).best(SLO)
        assert best is not None and len(calls) == len(set(calls))
        found.append(score(best, SLO) / max(capacities(run, seq_len).values()))
        count, start = count + len(calls), best.settings
    return found, count


def replays(budget: int) -> tuple[list[float], int]:
    """Every run's found shares (two lengths each), and the configurations measured in all."""
    found, count = [], 0
    for run in sorted(DATA["runs"]):
        shared, measured_here = shares(run, functools.partial(quick, budget=budget))
        found, count = found + shared, count + measured_here
    return found, count


def mean_surface(seq_len: int) -> dict[str, float]:
    table: dict[str, list[float]] = {name: [] for name in GRID}
    for run in DATA["runs"]:
        caps = capacities(run, seq_len)
        top = statistics.mean(sorted(caps.values())[-5:])
        for name, value in caps.items():
            table[name].append(value / top)
    return {name: statistics.mean(values) for name, values in table.items()}


def chosen(
    figures: dict[str, float], truth: dict[str, float], rng: random.Random, sd: float, finals: int
) -> str:
    """The choice after final re-measures: the best, re-measured; again while another overtakes it, up to `finals`."""
    figures, done = dict(figures), set[str]()
    while True:
        best = max(figures, key=figures.__getitem__)
        if best in done or len(done) >= finals:
            return best
        figures[best] = truth[best] * rng.gauss(1, sd)
        done.add(best)


def noisy(budget: int, trials: int, noise: float, seed: int = 1) -> tuple[list[float], list[int]]:
    rng, truth = random.Random(seed), {n: mean_surface(n) for n in LENGTHS}
    quality, counts = [], []
    for _ in range(trials):
        start, count = None, 0
        for seq_len in LENGTHS:
            searched: dict[str, dict[str, float]] = {"quick": {}, "brute": {}}

            def measure(
                s: Settings, kind: str, seq_len: int = seq_len, searched: dict = searched
            ) -> Measurement:
                searched[kind][s.name] = truth[seq_len][s.name] * rng.gauss(1, noise)
                return measured(s, seq_len, [[8, max(searched[kind][s.name], 1e-3) * 100, 20.0]])

            quick(SPACE, lambda s: measure(s, "quick"), SLO, start=start, budget=budget)
            brute(SPACE, lambda s: measure(s, "brute"))
            q = chosen(searched["quick"], truth[seq_len], rng, noise / 3, 1)
            b = chosen(searched["brute"], truth[seq_len], rng, noise / 3, 2)
            quality.append(truth[seq_len][q] / truth[seq_len][b] * rng.gauss(1, 0.03))
            start, count = GRID[q], count + len(searched["quick"])
        counts.append(count)
    return quality, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="8,9,10,11,12,20")
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--noise", type=float, default=0.14)
    args = parser.parse_args()
    print(f"{len(DATA['runs'])} brute-force runs; noise sd {args.noise}, {args.trials} trials")
    print(
        "budget | replays: lengths >= 95 % | configurations | noisy: P(quality >= 95 %) | median | configurations (mean)"
    )
    for budget in (int(b) for b in args.budgets.split(",")):
        found, count = replays(budget)
        quality, counts = noisy(budget, args.trials, args.noise)
        share = sum(q >= 0.95 for q in quality) / len(quality)
        print(
            f"{budget:6d} | {sum(f >= 0.95 for f in found):2d} of {len(found)} | {count:3d} | "
            f"{share:.2f} | {statistics.median(quality):.3f} | {statistics.mean(counts):.1f}"
        )


if __name__ == "__main__":
    main()
