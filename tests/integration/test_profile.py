"""`modelfleet profile` on a tiny generated model: real servers (subprocesses) and the real load
generator, a tiny sweep of short steps (seconds), profile.json and the chart, then `recommend`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import build_app
from modelfleet.tune.schema import Profile
from tests.models import identity, write_config

TINY = ["--seq-lens", "8", "--delays-us", "0", "--instances", "1", "--threads", "1"]
FAST = ["--step-s", "0.3", "--warmup-s", "0.1", "--max-concurrency", "2", "--slo-ms", "200"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    identity(tmp_path / "repo" / "tiny" / "1" / "model.onnx")
    write_config(tmp_path / "repo" / "tiny", {"max_batch_size": 8, "pinned": True})
    return tmp_path / "repo"


def test_profile_writes_profile_and_chart_then_recommend_reads_it(repo: Path) -> None:
    runner = CliRunner()
    config_before = (repo / "tiny" / "config.yaml").read_text()
    result = runner.invoke(
        build_app(), ["profile", str(repo), "tiny", "--batch-sizes", "1,4", *TINY, *FAST, "--final-s", "0.5"]
    )
    assert result.exit_code == 0, result.output
    profile = Profile.model_validate_json((repo / "tiny" / "1" / "profile.json").read_text())
    assert [m.config for m in profile.measurements] == ["b1-d0-i1-t1", "b4-d0-i1-t1"]
    # the best configuration's capacity step measured once more, longer: that step is its capacity
    bound, rate = profile.slo.bound_ms, profile.slo.max_error_rate
    best = max(profile.measurements, key=lambda m: m.capacity(bound, rate).throughput_per_s)  # type: ignore[union-attr]
    assert best.final_s == 0.5 and len(best.final) == 1, best
    capacity = best.capacity(bound, rate)
    assert capacity is not None and capacity.concurrency == best.final[0]
    assert capacity.requests > 0 and best.elapsed_s is not None and capacity.duration_s == 0.5
    assert profile.schema_version == 2 and profile.slo.margin == 0.9 and profile.slo.bound_ms == 180
    for m in profile.measurements:
        assert m.stopped != "failed", m.error
        assert m.elapsed_s is not None and m.elapsed_s > m.load_s  # type: ignore[operator]
        assert set(m.confirmed) <= {s.concurrency for s in m.steps}
        assert [s.concurrency for s in m.steps][:1] == [1]
        # a ramp's first step from concurrency 1 is a low step: half of --step-s (unless confirmed)
        assert m.steps[0].duration_s == 0.15 or 1 in m.confirmed + m.final, m.steps
        assert all(s.requests > 0 and s.p90_ms is not None for s in m.steps)
        assert m.load_s is not None and m.load_s > 0
        # the first request loads the model on a server started without it: part of load_s
        assert m.cold_start_s is not None and 0 < m.cold_start_s < m.load_s
        assert m.memory_bytes is not None and m.memory_bytes > 10 * 2**20
    assert profile.machine.nproc >= 1 and not profile.interrupted
    assert (repo / "tiny" / "1" / "profile.png").stat().st_size > 10_000
    assert (repo / "tiny" / "config.yaml").read_text() == config_before  # the sweep ran on a copy

    answer = runner.invoke(
        build_app(),
        ["recommend", str(repo), "tiny", "--rate", "100", "--instance-type", "c7i.large", "--json"],
    )
    assert answer.exit_code == 0, answer.output
    first = json.loads(answer.stdout)["recommendations"][0]
    assert first["instance_type"] == "c7i.large" and first["instance_count"] >= 1


def test_quick_search_and_bad_input(repo: Path) -> None:
    runner = CliRunner()
    out = repo.parent / "quick.json"
    result = runner.invoke(
        build_app(),
        [
            "profile",
            str(repo),
            "tiny",
            "--batch-sizes",
            "1,4",
            *TINY,
            *FAST,
            "--search",
            "quick",
            "--out",
            str(out),
            "--no-chart",
            "--confirm-steps",
            "0",
            "--slo-margin",
            "1",
            "--final-s",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    profile = Profile.model_validate_json(out.read_text())
    assert profile.search == "quick" and 1 <= len(profile.measurements) <= 2
    assert profile.slo.margin == 1 and all(m.confirmed == [] for m in profile.measurements)
    assert all(m.final == [] and m.final_s is None for m in profile.measurements)  # --final-s 0
    bad = runner.invoke(build_app(), ["profile", str(repo), "nope", *TINY])
    assert bad.exit_code == 2 and "unknown model 'nope'" in bad.stderr
    bad = runner.invoke(build_app(), ["profile", str(repo), "tiny", "--batch-sizes", "0"])
    assert bad.exit_code == 2
    bad = runner.invoke(build_app(), ["profile", str(repo), "tiny", "--confirm-steps", "-1"])
    assert bad.exit_code == 2 and "--confirm-steps must not be negative" in bad.stderr
    bad = runner.invoke(build_app(), ["profile", str(repo), "tiny", "--final-s", "-1"])
    assert bad.exit_code == 2 and "--final-s must not be negative" in bad.stderr
    for margin in ("0", "1.5"):
        bad = runner.invoke(build_app(), ["profile", str(repo), "tiny", "--slo-margin", margin])
        assert bad.exit_code == 2 and "--slo-margin" in bad.stderr, bad.stderr


def interrupted_after(command: list[str], line: bytes, sig: int = signal.SIGINT) -> tuple[int, bytes]:
    """Run `command`, send it `sig` (Ctrl-C) once its stderr says `line` (reading blocks until then);
    its exit code and everything it said."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    said = b""
    try:
        assert proc.stderr is not None
        for got in proc.stderr:
            said += got
            if line in got:
                break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        said += err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, said


def test_ctrl_c_keeps_what_was_measured(repo: Path) -> None:
    path = repo / "tiny" / "1" / "profile.json"
    command = [
        sys.executable,
        "-m",
        "modelfleet",
        "profile",
        str(repo),
        "tiny",
        "--batch-sizes",
        "1,2,4,8",
        *TINY,
    ]
    command += [
        "--step-s",
        "0.3",
        "--warmup-s",
        "0.1",
        "--max-concurrency",
        "64",
        "--slo-ms",
        "10000",
        "--no-chart",
    ]
    code, said = interrupted_after(command, b"configurations measured and written")
    assert code == 130, said.decode()
    profile = Profile.model_validate_json(path.read_text())
    assert profile.interrupted
    assert 1 <= len(profile.measurements) < 4
    assert yaml.safe_load((repo / "tiny" / "config.yaml").read_text()) == {
        "max_batch_size": 8,
        "pinned": True,
    }


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_in_the_final_step_keeps_the_ramp(repo: Path, sig: int) -> None:
    """One configuration: its line says it is written, then the final step (60 s) begins. SIGTERM
    stops as Ctrl-C does (the profile server stopped, what was measured kept)."""
    path = repo / "tiny" / "1" / "profile.json"
    command = [sys.executable, "-m", "modelfleet", "profile", str(repo), "tiny", "--batch-sizes", "1", *TINY]
    command += [*FAST, "--final-s", "60", "--no-chart"]
    code, said = interrupted_after(command, b"1/1 configurations measured and written", sig)
    assert code == 130, said.decode()
    profile = Profile.model_validate_json(path.read_text())
    assert profile.interrupted and len(profile.measurements) == 1, said.decode()
    (m,) = profile.measurements
    assert m.steps and m.final == [] and m.final_s is None  # the ramp kept, no final figure
    assert yaml.safe_load((repo / "tiny" / "config.yaml").read_text()) == {
        "max_batch_size": 8,
        "pinned": True,
    }


def test_shape_buckets_swept_over_mixed_lengths(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    identity(repo / "seq" / "1" / "model.onnx", "FP32", ("batch", "length"))
    write_config(
        repo / "seq",
        {
            "max_batch_size": 8,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, -1]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, -1]}],
        },
    )
    out = tmp_path / "buckets.json"
    result = CliRunner().invoke(
        build_app(),
        ["profile", str(repo), "seq", "--seq-lens", "4-12", "--buckets", "none,8/16", "--batch-sizes", "4",
         "--delays-us", "0", "--instances", "1", "--threads", "1", *FAST, "--out", str(out), "--no-chart"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    profile = Profile.model_validate_json(out.read_text())
    assert [m.config for m in profile.measurements] == ["b4-d0-i1-t1-s0", "b4-d0-i1-t1-s8.16"]
    for m in profile.measurements:
        assert m.stopped != "failed", m.error
        assert (m.seq_len_min, m.seq_len) == (4, 12)
        assert m.steps and all(s.requests > 0 and s.errors == 0 for s in m.steps)
