"""`modelfleet bench` end to end: real sockets, a real server, the CLI through CliRunner.

Targets: `benchmarks/trivial_target.py` under uvicorn in a subprocess, a small threaded server here
that answers chunked, closes every third connection, and never answers model `silent`, and another
that refuses model `busy` at once with 429 and answers others after 20 ms (for the open loop).
"""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelfleet.cli import build_app

REPO = Path(__file__).resolve().parents[2]
FAST = ["--duration", "0.6", "--warmup", "0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def trivial_url() -> Iterator[str]:
    """benchmarks/trivial_target.py's app under uvicorn, on a socket this test listens on before the
    server starts: connections wait in its backlog until the server accepts them, so the first
    request is answered once the server is up (no polling for readiness)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        fd = listener.fileno()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "trivial_target:app",
            "--app-dir",
            str(REPO / "benchmarks"),
        ]
        command += ["--fd", str(fd), "--log-level", "warning", "--no-access-log"]
        with subprocess.Popen(command, pass_fds=[fd]) as proc:
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            try:
                assert httpx.get(f"{url}/v2/health/ready", timeout=15).status_code == 200
                yield url
            finally:
                proc.terminate()
                proc.wait(10)


def bench(*args: str, exit_code: int = 0) -> None:
    result = CliRunner().invoke(build_app(), ["bench", *args])
    assert result.exit_code == exit_code, result.output + repr(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def assert_sane(report: dict[str, Any]) -> None:
    assert report["requests"] > 0
    assert report["errors"] == {"total": 0, "by_kind": {}}
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_json_zipf_over_three_models(trivial_url: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    bench(
        "--url",
        trivial_url,
        "-m",
        "a,b",
        "-m",
        "c",
        "--popularity",
        "zipf",
        "-c",
        "4",
        *FAST,
        "--report",
        str(out),
    )
    report = read_report(out)
    assert_sane(report)
    assert report["requests_per_s"] == pytest.approx(report["requests"] / 0.6, abs=0.005)  # 2 places
    assert [m["model"] for m in report["top_models"]] == ["a", "b", "c"]
    assert sum(m["requests"] for m in report["top_models"]) == report["requests"]
    assert report["options"]["popularity"] == "zipf"
    assert report["options"]["concurrency"] == 4
    assert report["started_at"].endswith("+00:00")


def test_binary_pattern_over_two_processes(trivial_url: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    pattern = ["--model-pattern", "tenant-{i:03d}", "--model-count", "300"]
    bench(
        "--url",
        trivial_url,
        *pattern,
        "--encoding",
        "binary",
        "-c",
        "4",
        "-p",
        "2",
        *FAST,
        "--report",
        str(out),
    )
    report = read_report(out)
    assert_sane(report)
    assert report["client"]["processes"] == 2
    assert report["models"]["count"] == 300
    assert report["options"]["same_signature"] is True
    assert all(m["model"].startswith("tenant-") for m in report["top_models"])


def test_http_errors_are_counted_and_fail_the_run(trivial_url: str, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text('{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}')
    out = tmp_path / "report.json"
    args = ["--url", f"{trivial_url}/nowhere", "-m", "m", "--input-file", str(request), "-c", "2"]
    bench(*args, *FAST, "--report", str(out), exit_code=1)
    report = read_report(out)
    assert report["requests"] == 0
    assert report["errors"]["by_kind"]["http_404"] == report["errors"]["total"] > 0
    bench(*args, "--duration", "0.2", "--warmup", "0", "--no-fail-on-error", exit_code=0)


def test_unreachable_server_stops_before_the_run() -> None:
    bench("--url", f"http://127.0.0.1:{free_port()}", "-m", "m", *FAST, exit_code=2)


class OddHandler(socketserver.BaseRequestHandler):
    """Chunked answers, `Connection: close` on every third, and silence for model `silent`."""

    def handle(self) -> None:
        buffer = b""
        answered = 0
        while True:
            try:
                while b"\r\n\r\n" not in buffer:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += self.request.recv(65536)
                buffer = buffer[length:]
                if b"/silent/" in head:
                    while self.request.recv(65536):  # until the client gives up
                        pass
                    return
                answered += 1
                close = answered % 3 == 0
                self.request.sendall(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n3\r\n{}\n\r\n0\r\n\r\n"
                )
                if close:
                    return
            except OSError:
                return


@pytest.fixture
def odd_url() -> Iterator[str]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), OddHandler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


def test_chunked_answers_reconnects_and_timeouts(odd_url: str, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text('{"inputs": []}')
    out = tmp_path / "report.json"
    args = [
        "--url",
        odd_url,
        "-m",
        "good,silent",
        "--input-file",
        str(request),
        "-c",
        "4",
        "--timeout",
        "0.2",
    ]
    bench(*args, *FAST, "--report", str(out), exit_code=1)
    report = read_report(out)
    assert report["requests"] > 0  # closed connections were replaced without errors
    assert set(report["errors"]["by_kind"]) == {"timeout"}
    rows = {m["model"]: m for m in report["top_models"]}
    assert rows["good"]["errors"] == 0 and rows["good"]["requests"] == report["requests"]
    assert rows["silent"]["requests"] == 0 and rows["silent"]["errors"] == report["errors"]["total"]


SERIES_FIELDS = {"t_s", "sent", "ok", "refused", "failed", "saturated", "ok_p99_ms"}


def open_loop_at_200(trivial_url: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "report.json"
    bench(
        "--url",
        trivial_url,
        "-m",
        "trivial",
        "--rate",
        "200",
        "-d",
        "2",
        "--warmup",
        "0.2",
        "--report",
        str(out),
    )
    return read_report(out)


def test_open_loop_sends_rate_times_duration_requests(trivial_url: str, tmp_path: Path) -> None:
    """What the open loop counts, whatever the machine's load (its timing: the perf test below)."""
    report = open_loop_at_200(trivial_url, tmp_path)
    loop = report["open_loop"]
    total = loop["total"]
    assert total["scheduled"] == total["sent"] == 400  # constant spacing: exactly rate x duration
    assert total["status_counts"] == {"200": 400} and total["client_failures"] == {}
    assert report["requests"] == 400 and report["errors"]["total"] == 0
    series = loop["series"]
    assert len(series) >= 2 and all(set(second) == SERIES_FIELDS for second in series)
    assert sum(second["ok"] for second in series) == 400
    assert series[0]["ok_p99_ms"] > 0
    assert 1 <= loop["peak_connections"] <= 512


@pytest.mark.perf
def test_open_loop_keeps_the_asked_rate(trivial_url: str, tmp_path: Path) -> None:
    """Timing thresholds (an idle machine): deselected by default, run with `-m perf`."""
    report = open_loop_at_200(trivial_url, tmp_path)
    loop = report["open_loop"]
    total = loop["total"]
    assert total["scheduled"] == total["sent"] == 400  # constant spacing: exactly rate x duration
    assert total["send_rate_per_s"] == pytest.approx(200, rel=0.02)
    assert total["status_counts"] == {"200": 400} and total["client_failures"] == {}
    assert report["requests"] == 400 and report["errors"]["total"] == 0
    assert loop["send_lag_ms"]["p50"] < 20  # the client kept to its schedule
    series = loop["series"]
    assert len(series) >= 2 and all(set(second) == SERIES_FIELDS for second in series)
    assert [second["sent"] for second in series[:2]] == [
        pytest.approx(200, abs=10)
    ] * 2  # by actual send time
    assert sum(second["ok"] for second in series) == 400
    assert series[0]["ok_p99_ms"] > 0
    assert 1 <= loop["peak_connections"] <= 512


def test_open_loop_phases_over_two_processes(trivial_url: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    phases = ["--phase", "1s@100", "--phase", "1s@300", "--arrivals", "poisson", "--seed", "5"]
    bench("--url", trivial_url, "-m", "trivial", *phases, "-p", "2", "--warmup", "0.2", "--report", str(out))
    report = read_report(out)
    assert report["options"]["duration_s"] == 2 and report["client"]["processes"] == 2
    first, second = report["open_loop"]["phases"]
    assert (first["rate_per_s"], second["rate_per_s"]) == (100, 300)
    assert first["sent"] == pytest.approx(100, abs=40)  # Poisson: about 4 sigma
    assert second["sent"] == pytest.approx(300, abs=70)
    assert first["status_counts"] == {"200": first["sent"]}
    assert second["start_s"] == 1


def test_open_loop_rejects_closed_loop_options(trivial_url: str) -> None:
    bench("--url", trivial_url, "-m", "trivial", "--rate", "10", "-c", "4", exit_code=2)
    bench("--url", trivial_url, "-m", "trivial", "--phase", "1s@10", "-d", "3", exit_code=2)
    bench("--url", trivial_url, "-m", "trivial", "--phase", "1s", exit_code=2)


class RefusingHandler(socketserver.BaseRequestHandler):
    """Keep-alive HTTP/1.1: 429 at once for model `busy`, 200 after 20 ms for any other."""

    def handle(self) -> None:
        buffer = b""
        while True:
            try:
                while b"\r\n\r\n" not in buffer:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += self.request.recv(65536)
                buffer = buffer[length:]
                if b"/busy/" in head:
                    status, body = b"429 Too Many Requests", b'{"error":"queue full"}'
                else:
                    time.sleep(0.02)
                    status, body = b"200 OK", b"{}"
                self.request.sendall(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
            except OSError:
                return


@pytest.fixture
def refusing_url() -> Iterator[str]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), RefusingHandler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


def refusals_report(refusing_url: str, tmp_path: Path) -> dict[str, Any]:
    request = tmp_path / "request.json"
    request.write_text('{"inputs": []}')
    out = tmp_path / "report.json"
    args = ["--url", refusing_url, "-m", "fine,busy", "--input-file", str(request), "--warmup", "0.1"]
    bench(*args, "--rate", "100", "-d", "1.5", "--report", str(out), exit_code=1)  # 429s fail the run
    return read_report(out)


def test_open_loop_counts_refusals(refusing_url: str, tmp_path: Path) -> None:
    """What is counted, whatever the machine's load (how fast: the perf test below)."""
    report = refusals_report(refusing_url, tmp_path)
    total = report["open_loop"]["total"]
    codes = total["status_counts"]
    assert set(codes) == {"200", "429"} and codes["200"] + codes["429"] == total["sent"] == 150
    assert report["errors"]["by_kind"] == {"http_429": codes["429"]}
    assert total["latency_ms"]["ok"]["p50"] >= 20  # answered after 20 ms
    assert sum(second["refused"] for second in report["open_loop"]["series"]) == codes["429"]
    rows = {m["model"]: m for m in report["top_models"]}
    assert rows["busy"]["requests"] == 0 and rows["busy"]["errors"] == codes["429"]


@pytest.mark.perf
def test_open_loop_counts_refusals_and_how_fast_they_came(refusing_url: str, tmp_path: Path) -> None:
    report = refusals_report(refusing_url, tmp_path)
    total = report["open_loop"]["total"]
    codes = total["status_counts"]
    assert set(codes) == {"200", "429"} and codes["200"] + codes["429"] == total["sent"] == 150
    assert report["errors"]["by_kind"] == {"http_429": codes["429"]}
    refused, ok = total["latency_ms"]["refused"], total["latency_ms"]["ok"]
    assert refused["p99"] < 20 <= ok["p50"]  # refused at once, answered after 20 ms
    assert sum(second["refused"] for second in report["open_loop"]["series"]) == codes["429"]
    rows = {m["model"]: m for m in report["top_models"]}
    assert rows["busy"]["requests"] == 0 and rows["busy"]["errors"] == codes["429"]


def full_pool_report(refusing_url: str, tmp_path: Path) -> dict[str, Any]:
    request = tmp_path / "request.json"
    request.write_text('{"inputs": []}')
    out = tmp_path / "report.json"
    args = ["--url", refusing_url, "-m", "fine", "--input-file", str(request), "--warmup", "0"]
    # two connections answer at most ~100 requests/s at 20 ms each: the rest cannot be sent
    bench(
        *args,
        "--rate",
        "300",
        "-d",
        "1",
        "--max-connections",
        "2",
        "--report",
        str(out),
        "--no-fail-on-error",
    )
    total: dict[str, Any] = read_report(out)["open_loop"]["total"]
    return total


def test_open_loop_counts_the_requests_a_full_pool_cannot_send(refusing_url: str, tmp_path: Path) -> None:
    """What is counted, whatever the machine's load (its latency: the perf test below)."""
    total = full_pool_report(refusing_url, tmp_path)
    saturated = total["client_failures"]["client_saturated"]
    assert total["scheduled"] == 300 and total["sent"] + saturated == 300
    assert saturated > 100 and total["status_counts"] == {"200": total["sent"]}


@pytest.mark.perf
def test_open_loop_counts_what_a_full_pool_cannot_send(refusing_url: str, tmp_path: Path) -> None:
    total = full_pool_report(refusing_url, tmp_path)
    saturated = total["client_failures"]["client_saturated"]
    assert total["scheduled"] == 300 and total["sent"] + saturated == 300
    assert saturated > 100 and total["status_counts"] == {"200": total["sent"]}
    assert total["latency_ms"]["ok"]["p99"] < 100  # nothing waited for a connection
