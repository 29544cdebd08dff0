"""--plot: a PNG for a closed-loop ramp stopped by a threshold, and for an open loop in phases."""

import dataclasses
from pathlib import Path

from modelfleet.bench.messages import StopInfo
from modelfleet.bench.openstats import merge_open
from modelfleet.bench.plot import plot_run
from modelfleet.bench.series import closed_figures
from modelfleet.bench.spec import UserPhase
from modelfleet.bench.stats import merge
from tests.unit.bench.test_openstats import SHARE_A, SHARE_B, open_spec
from tests.unit.bench.test_openstats import share as open_share
from tests.unit.bench.test_series import share

PNG = b"\x89PNG\r\n\x1a\n"


def test_closed_loop_ramp_chart(tmp_path: Path) -> None:
    stop = StopInfo("p90", 120.0, 100.0, 3.5)
    results = [share([0.2, 0.8, 1.5, 2.2, 2.9, 3.4], [5, 6, 7, 40, 90, 130], [3.1], 3.5, stop)]
    figures = closed_figures(results, (UserPhase(1, 60, 2), UserPhase(4, 60, 2)))
    result = dataclasses.replace(merge(results, ["m"], figures.recorded_s, 10), closed_loop=figures)
    path = tmp_path / "charts" / "ramp.png"
    plot_run(result, path, "ramp")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 20_000  # three panels


def test_open_loop_chart(tmp_path: Path) -> None:
    spec = open_spec()
    result = merge_open([open_share(SHARE_A, 0.5, 3), open_share(SHARE_B, 0.25, 2)], ["a", "b"], spec)
    path = tmp_path / "open.png"
    plot_run(result, path, "open")
    assert path.read_bytes()[:8] == PNG
