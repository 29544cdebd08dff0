"""`modelfleet bench` against `modelfleet serve` on a tiny generated model: the three targets (V2
HTTP, V2 gRPC, SageMaker /invocations) with and without an API key, the stop thresholds, user-ramp
phases, the cost per million inferences and the chart.

One server for the module: `--sagemaker` (its routes beside the V2 ones on the same port), gRPC on
its own free port, a keys file whose tenant reaches `identity`, and an admin key, so that a client
without a key is refused even from loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelfleet.bench.series import cost_per_million
from modelfleet.cli import build_app
from modelfleet.planner.catalog import load_catalog
from modelfleet.server.auth import key_digest
from tests.e2e.conftest import ServerProcess
from tests.models import identity, write_config

KEY = "bench-tenant-key-0123456789"
FAST = ["--warmup", "0.1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("bench-targets")
    repo = root / "repo"
    identity(repo / "identity" / "1" / "model.onnx")
    write_config(
        repo / "identity",
        {
            "backend": "onnxruntime",
            "max_batch_size": 8,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 16]}],
            "onnxruntime": {"intra_op_threads": 1},
        },
    )
    keys = root / "keys.json"
    keys.write_text(json.dumps({"tenants": {"t": {"keys": [key_digest(KEY)], "models": ["identity"]}}}))
    proc = ServerProcess(
        repo,
        "--sagemaker",
        "--auth-keys-file",
        str(keys),
        "--startup-load",
        "all",
        env={"MODELFLEET_ADMIN_KEY": "bench-admin-key-0123456789"},
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def bench(*args: str, exit_code: int = 0, key: str | None = KEY) -> str:
    env = {"MODELFLEET_API_KEY": key} if key is not None else {}
    result = CliRunner().invoke(build_app(), ["bench", *args], env=env)
    assert result.exit_code == exit_code, result.output + repr(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.output


def report(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_v2_http_with_and_without_the_key(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "v2.json"
    args = ["--url", f"http://{server.url}", "-m", "identity", "-c", "2", "-d", "0.5", *FAST]
    bench(*args, "--report", str(out))
    doc = report(out)
    assert doc["requests"] > 0 and doc["errors"]["total"] == 0
    assert doc["options"]["protocol"] == "v2" and doc["options"]["api_key"] == "(given)"
    assert KEY not in out.read_text()  # the key is never written down
    assert "401" in bench(*args, exit_code=2, key=None)  # metadata refused: the run cannot start


def test_sagemaker_invocations_target(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "sm.json"
    common = ["-m", "identity", "-c", "2", "-d", "0.5", *FAST, "--report", str(out)]
    for encoding in ("json", "binary"):
        bench("--protocol", "sagemaker", "--url", f"http://{server.url}", "--encoding", encoding, *common)
        doc = report(out)
        assert doc["requests"] > 0 and doc["errors"]["total"] == 0, doc["errors"]
        assert doc["options"]["protocol"] == "sagemaker"
    # the tenant's key reaches identity only: naming another model in the header is refused
    bench(
        "--protocol", "sagemaker", "--url", f"http://{server.url}", "-m", "identity", "-d", "0.5", *FAST,
        "--input-file", str(_body(tmp_path)), "--model", "other", "--report", str(out), exit_code=1,
    )  # fmt: skip
    assert set(report(out)["errors"]["by_kind"]) == {"http_404"}


def _body(tmp_path: Path) -> Path:
    path = tmp_path / "body.json"
    path.write_text(
        json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]})
    )
    return path


def test_sagemaker_target_is_not_the_v2_route(server: ServerProcess, tmp_path: Path) -> None:
    """A V2-only path prefix shows the requests go to /invocations: under /nowhere they all fail."""
    out = tmp_path / "sm.json"
    bench(
        "--protocol", "sagemaker", "--url", f"http://{server.url}/nowhere", "-m", "identity",
        "--input-file", str(_body(tmp_path)), "-d", "0.3", *FAST, "--report", str(out), exit_code=1,
    )  # fmt: skip
    assert set(report(out)["errors"]["by_kind"]) == {"http_404"}


def test_grpc_target_with_and_without_the_key(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "grpc.json"
    args = ["--protocol", "grpc", "--url", server.grpc_url, "-m", "identity", "-c", "3", "-d", "0.5", *FAST]
    bench(*args, "--report", str(out))
    doc = report(out)
    assert doc["requests"] > 0 and doc["errors"]["total"] == 0
    assert doc["options"]["target"] == f"grpc://{server.grpc_url}"
    assert "UNAUTHENTICATED" in bench(*args, exit_code=2, key=None)
    bench(*args, "--rate", "10", exit_code=2)  # the open loop is HTTP only


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--stop-p90-ms", "0.001", "p90"),
        ("--stop-p99-ms", "0.001", "p99"),
        ("--max-requests", "50", "max_requests"),
    ],
)
def test_a_threshold_stops_the_run_and_says_which(
    server: ServerProcess, tmp_path: Path, option: str, value: str, reason: str
) -> None:
    out = tmp_path / "stop.json"
    output = bench(
        "--url", f"http://{server.url}", "-m", "identity", "-c", "2", "-d", "30", *FAST, option, value,
        "--report", str(out),
    )  # fmt: skip
    doc = report(out)
    stopped = doc["closed_loop"]["stopped"]
    assert stopped["reason"] == reason and stopped["limit"] == float(value)
    assert doc["duration_s"] < 30 and doc["duration_s"] == pytest.approx(stopped["at_s"], abs=0.01)
    assert "stopped by" in output and reason in output
    if reason == "max_requests":
        assert 50 <= doc["requests"] + doc["errors"]["total"] <= 50 + 2  # plus those in flight
    else:
        assert stopped["value"] > float(value)


def test_error_rate_threshold_on_refused_requests(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "errors.json"
    wrong = tmp_path / "wrong.json"  # 17 numbers where identity takes rows of 16: every answer is 400
    wrong.write_text(
        json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 17], "data": [0] * 17}]})
    )
    bench(
        "--url", f"http://{server.url}", "-m", "identity", "--input-file", str(wrong), "-c", "2", "-d", "30",
        *FAST, "--stop-error-rate", "0.5", "--report", str(out), exit_code=1,
    )  # fmt: skip
    doc = report(out)
    assert doc["closed_loop"]["stopped"]["reason"] == "error_rate"
    assert doc["closed_loop"]["stopped"]["value"] == 1.0
    assert set(doc["errors"]["by_kind"]) == {"http_400"} and doc["duration_s"] < 30


def test_user_phases_cost_and_plot(server: ServerProcess, tmp_path: Path) -> None:
    out, png = tmp_path / "ramp.json", tmp_path / "ramp.png"
    bench(
        "--url", f"http://{server.url}", "-m", "identity", "--users", "1:0:1s", "--users", "2:60:1s",
        *FAST, "--instance-type", "c7i.large", "--report", str(out), "--plot", str(png),
    )  # fmt: skip
    doc = report(out)
    phases = doc["closed_loop"]["phases"]
    assert [(p["start_s"], p["users_from"], p["users_to"]) for p in phases] == [(0, 1, 1), (1, 2, 3)]
    assert all(p["ok"] > 0 for p in phases) and sum(p["ok"] for p in phases) == doc["requests"]
    assert [s["users"] for s in doc["closed_loop"]["series"]] == [1, 2]
    price = load_catalog().by_name()["c7i.large"].usd_per_hour
    assert price is not None
    assert doc["cost"]["instance_type"] == "c7i.large" and doc["cost"]["usd_per_hour"] == price
    expected = cost_per_million(price, doc["requests"] / doc["duration_s"])
    assert doc["cost"]["usd_per_million"] == pytest.approx(expected, rel=1e-3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bad_cost_and_ramp_options_exit_2(server: ServerProcess) -> None:
    args = ["--url", f"http://{server.url}", "-m", "identity", "-d", "0.3", *FAST]
    assert "not in the catalogue" in bench(*args, "--instance-type", "no.such-type", exit_code=2)
    assert "--users expects" in bench(
        "--url", f"http://{server.url}", "-m", "identity", "--users", "2:2", exit_code=2
    )
    bench(*args, "--users", "1:0:1s", exit_code=2)  # -d with --users
    assert "--stop-error-rate" in bench(*args, "--stop-error-rate", "5", exit_code=2)
    bench(*args, "--stop-p90-ms", "10", "--processes", "2", "-c", "2", exit_code=2)
