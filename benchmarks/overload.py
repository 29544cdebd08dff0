"""Issue 4's overload target, measured against `modelfleet serve` (started here, or given by --url).

    Overload at 4x the sustainable rate (open loop): accepted requests keep P99 under 3x their
    P99 at 80 % load, the rest get 429 quickly, memory stays flat, and the server recovers to
    full throughput within 5 s after the overload stops.

1. The sustainable rate S: closed loop, `modelfleet bench -c 32`, its requests/s.
2. Open loop (`modelfleet bench --phase`): 0.8·S for T s, 4·S for T s, 0.8·S for T s, constant
   spacing, latency from each request's scheduled send time; the server's RSS sampled every second.
3. The figures against the target: P99 of accepted requests at 80 % and during the overload, the
   429s and their latency, RSS over the run, and how long after the overload the per-second
   ok-throughput takes to be back at >= 95 % of 0.8·S.

    python benchmarks/overload.py --repo /tmp/modelfleet-demo --phase-s 30     # builds the demo repo if missing
    python benchmarks/overload.py --url http://127.0.0.1:8000 --pid 12345 --phase-s 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MiB = 1 << 20
READY_TIMEOUT_S = 180
P99_RATIO_TARGET = 3.0
RECOVERY_TARGET_S = 5.0
RECOVERED_FRACTION = 0.95


def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor() or "?",
    )
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"{when}, nproc {os.cpu_count()}, {cpu}, loadavg {load}, Python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def raise_file_limit(needed: int) -> None:
    """The server started here and the bench client inherit it: both hold one socket per connection."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard)
        )


class Server:
    """`modelfleet serve` in a subprocess with every overload-relevant setting given explicitly."""

    def __init__(self, repo: Path, settings: dict[str, str], args: list[str]) -> None:
        self.settings = settings  # MODELFLEET_* environment
        self.url = f"http://127.0.0.1:{free_port()}"
        self.command = [
            "modelfleet",
            "serve",
            str(repo),
            "--port",
            self.url.rsplit(":", 1)[1],
            "--grpc-port",
            "0",
            *args,
        ]
        self.log = Path(tempfile.mkstemp(prefix="modelfleet-overload-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.command],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **settings},
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server not ready after {READY_TIMEOUT_S} s; log: {self.log}")

    def describe(self) -> str:
        return " ".join([*(f"{k}={v}" for k, v in self.settings.items()), *self.command])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def bench_command(url: str, a: argparse.Namespace, report: Path, *load: str) -> list[str]:
    shape = [f"--shape=input_ids=1,{a.seq}", f"--shape=attention_mask=1,{a.seq}"]
    return [
        sys.executable, "-m", "modelfleet", "bench", "--url", url, "-m", a.model, *shape,
        "--encoding", a.encoding, "--timeout", str(a.client_timeout_s), "--report", str(report),
        "--no-fail-on-error", *load,
    ]  # fmt: skip


def sustainable_rate(url: str, a: argparse.Namespace) -> dict[str, Any]:
    """Closed loop at -c N: its requests/s is the rate the server sustains."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "closed.json"
        load = ["-c", str(a.concurrency), "-d", str(a.sustain_s), "--warmup", str(a.sustain_warmup_s)]
        command = bench_command(url, a, report, *load)
        print("$ " + " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return dict(json.loads(report.read_text()))


@dataclass
class OpenRun:
    report: dict[str, Any]
    rss: list[tuple[float, int]]  # (seconds since the recorded window began, bytes)


def open_loop(url: str, pid: int | None, a: argparse.Namespace, rates: list[float]) -> OpenRun:
    """The phases in one open-loop run, sampling the server's RSS every second meanwhile."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "open.json"
        phases = [f"--phase={a.phase_s:g}s@{r:.2f}" for r in rates]
        load = [*phases, "--warmup", str(a.open_warmup_s), "--max-connections", str(a.max_connections)]
        command = bench_command(url, a, report, *load)
        print("$ " + " ".join(command[1:]), flush=True)
        started: list[float] = []  # when the bench's load began (its "open loop ..." line)
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        stderr = proc.stderr

        def watch_stderr() -> None:
            for line in stderr:
                if line.startswith("open loop") and not started:
                    started.append(time.monotonic())
                sys.stderr.write(line)

        reader = threading.Thread(target=watch_stderr, daemon=True)
        reader.start()
        samples: list[tuple[float, int]] = []
        while proc.poll() is None:
            rss = rss_bytes(pid) if pid is not None else None
            if rss is not None:
                samples.append((time.monotonic(), rss))
            time.sleep(1.0)
        reader.join(5)
        if proc.returncode != 0:
            raise SystemExit(f"modelfleet bench failed with exit status {proc.returncode}")
        window_start = (started[0] if started else samples[0][0] if samples else 0.0) + a.open_warmup_s
        return OpenRun(json.loads(report.read_text()), [(t - window_start, r) for t, r in samples])


def recovery_s(
    series: list[dict[str, Any]], end_s: float, until_s: float, ok_floor: float, p99_ceiling_ms: float | None
) -> float | None:
    """Seconds after `end_s` until every later full second (up to `until_s`) has ok >= the floor
    (and ok P99 <= the ceiling when given): the end of the first such second, a 1-s upper bound."""
    seconds = [s for s in series if s["t_s"] >= math.ceil(end_s) and s["t_s"] + 1 <= until_s]
    good = [
        s["ok"] >= ok_floor
        and (p99_ceiling_ms is None or (s["ok_p99_ms"] is not None and s["ok_p99_ms"] <= p99_ceiling_ms))
        for s in seconds
    ]
    for i in range(len(seconds)):
        if all(good[i:]):
            return float(seconds[i]["t_s"] + 1 - end_s)
    return None


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def verdict(ok: bool) -> str:
    return "meets the target" if ok else "MISSES the target"


def phase_lines(phases: list[dict[str, Any]]) -> list[str]:
    lines = [
        "phase        asked/s  sent/s   2xx/s     429  other   ok P50 ms  ok P99 ms  429 P50 ms  429 P99 ms"
    ]
    for name, p in zip(("80 %", "overload", "80 % after"), phases, strict=True):
        refused = p["status_counts"].get("429", 0)
        ok, no = p["latency_ms"]["ok"], p["latency_ms"]["refused"]
        lines.append(
            f"{name:<11}{p['rate_per_s']:>9.1f}{p['send_rate_per_s']:>8.1f}{p['goodput_per_s']:>8.1f}{refused:>8}"
            f"{p['scheduled'] - p['ok'] - refused:>7}{ms(ok['p50']):>12}{ms(ok['p99']):>11}{ms(no['p50']):>12}"
            f"{ms(no['p99']):>12}"
        )
    return lines


def rss_line(rss: list[tuple[float, int]], phases: list[dict[str, Any]]) -> str:
    if not rss:
        return "server RSS: not sampled (give --pid with --url)"
    values = [r for _, r in rss]
    per_phase = [
        max((r for t, r in rss if p["start_s"] <= t < p["start_s"] + p["duration_s"]), default=0) / MiB
        for p in phases
    ]
    return (
        f"server RSS: min {min(values) / MiB:.0f} MiB, max {max(values) / MiB:.0f} MiB over {len(values)} samples "
        f"(1/s); max per phase {' / '.join(f'{m:.0f}' for m in per_phase)} MiB; at the end "
        f"{(values[-1] / MiB - per_phase[0]):+.0f} MiB against the first phase's max"
    )


def recovery_lines(
    series: list[dict[str, Any]], over: dict[str, Any], after: dict[str, Any], base_p99: float | None
) -> list[str]:
    end_s = over["start_s"] + over["duration_s"]
    until_s = after["start_s"] + after["duration_s"]
    floor = RECOVERED_FRACTION * after["rate_per_s"]
    throughput = recovery_s(series, end_s, until_s, floor, None)
    ceiling = P99_RATIO_TARGET * base_p99 if base_p99 else None
    latency = recovery_s(series, end_s, until_s, floor, ceiling)
    floor_text = f">= {RECOVERED_FRACTION:.0%} of {after['rate_per_s']:.1f}/s = {floor:.1f} 2xx/s"
    if throughput is None:
        first = f"recovery: 2xx/s not back at {floor_text} for the rest of the last phase"
    else:
        first = (
            f"recovery: 2xx/s at {floor_text} in every second from {throughput:g} s after the overload on "
            f"(1-s bins, an upper bound; target {RECOVERY_TARGET_S:g} s: {verdict(throughput <= RECOVERY_TARGET_S)})"
        )
    second = (
        f"          and with their P99 also <= {P99_RATIO_TARGET:g}x the 80 % P99 ({ms(ceiling)} ms): "
        + ("not within the last phase" if latency is None else f"from {latency:g} s on")
    )
    return [first, second]


def series_lines(series: list[dict[str, Any]], rss: list[tuple[float, int]]) -> list[str]:
    rss_by_second: dict[int, int] = {}
    for t, r in rss:
        rss_by_second[math.floor(t)] = max(r, rss_by_second.get(math.floor(t), 0))
    lines = ["per second (t from the first phase's start; 2xx and 429 by answer time, sent by send time):"]
    for s in series:
        rss_mib = rss_by_second.get(s["t_s"])
        lines.append(
            f"  t={s['t_s']:>3}  sent {s['sent']:>6}  2xx {s['ok']:>6}  429 {s['refused']:>6}  "
            f"other {s['failed'] + s['saturated']:>5}  2xx P99 {ms(s['ok_p99_ms']):>8} ms"
            + (f"  RSS {rss_mib / MiB:.0f} MiB" if rss_mib is not None else "")
        )
    return lines


def summarize(
    a: argparse.Namespace, closed: dict[str, Any], rate: float, run: OpenRun, settings: str
) -> None:
    loop = run.report["open_loop"]
    total = loop["total"]
    base, over, after = loop["phases"]
    base_p99, over_p99 = base["latency_ms"]["ok"]["p99"], over["latency_ms"]["ok"]["p99"]
    ratio = over_p99 / base_p99 if base_p99 and over_p99 is not None else math.nan
    refused = total["latency_ms"]["refused"]
    others = {k: v for k, v in total["status_counts"].items() if k not in ("200", "429")}
    lat = closed["latency_ms"]
    lines = [
        "",
        f"machine: {machine()}",
        f"server: {settings}",
        f"model {a.model}, sequence {a.seq}, {a.encoding} encoding",
        f"sustainable rate S = {rate:.1f} req/s (closed loop -c {a.concurrency}, {a.sustain_s:g} s: "
        f"P50 {ms(lat['p50'])} ms, P99 {ms(lat['p99'])} ms, errors {closed['errors']['total']})",
        f"open loop: {a.base_factor:g}·S = {base['rate_per_s']:.1f}/s, {a.overload_factor:g}·S = "
        f"{over['rate_per_s']:.1f}/s, {a.base_factor:g}·S again, {a.phase_s:g} s each, constant spacing; "
        f"{loop['peak_connections']} of {loop['max_connections']} connections opened; "
        f"send lag P99 {ms(loop['send_lag_ms']['p99'])} ms",
        "",
        *phase_lines([base, over, after]),
        f"other outcomes: HTTP {others or '-'}, client {total['client_failures'] or '-'}",
        "",
        f"accepted (2xx) P99: {ms(base_p99)} ms at 80 % vs {ms(over_p99)} ms during the overload = {ratio:.2f}x "
        f"(target < {P99_RATIO_TARGET:g}x: {verdict(ratio < P99_RATIO_TARGET)})",
        f"429: {total['status_counts'].get('429', 0)} answers, P50 {ms(refused['p50'])} ms, P99 {ms(refused['p99'])} ms, "
        f"max {ms(refused['max'])} ms; 2xx/s during the overload {over['goodput_per_s']:.1f} = "
        f"{over['goodput_per_s'] / rate:.2f}·S",
        rss_line(run.rss, [base, over, after]),
        *recovery_lines(loop["series"], over, after, base_p99),
        *series_lines(loop["series"], run.rss),
    ]
    print("\n".join(lines))


def ensure_repo(repo: Path, model: str) -> None:
    if (repo / model).is_dir():
        return
    print(f"building the demo repository at {repo}", flush=True)
    subprocess.run([sys.executable, "-m", "modelfleet", "demo-repo", str(repo)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    target = parser.add_argument_group("target")
    target.add_argument(
        "--repo", type=Path, default=Path("/tmp/modelfleet-demo"), help="demo repository (built if missing)"
    )
    target.add_argument("--url", help="a running server instead of starting one")
    target.add_argument("--pid", type=int, help="that server's process id, for its RSS")
    target.add_argument("--model", default="minilm-sentiment")
    target.add_argument("--seq", type=int, default=32, help="sequence length of input_ids and attention_mask")
    target.add_argument("--encoding", choices=("binary", "json"), default="binary")
    server = parser.add_argument_group("server started here (printed with the results)")
    server.add_argument(
        "--intra-op-threads", type=int, default=0, help="0: ONNX Runtime's choice (the server default)"
    )
    server.add_argument(
        "--max-queue-size", type=int, default=1024, help="requests waiting per model before 429 (default)"
    )
    server.add_argument(
        "--request-timeout-s", type=float, default=60.0, help="504 after this long (server default)"
    )
    server.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="more MODELFLEET_* settings"
    )
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", type=int, default=32, help="closed-loop connections for S")
    load.add_argument("--sustain-s", type=float, default=15.0, help="recorded seconds of the closed loop")
    load.add_argument("--sustain-warmup-s", type=float, default=5.0)
    load.add_argument("--phase-s", type=float, default=30.0, help="seconds of each open-loop phase")
    load.add_argument("--open-warmup-s", type=float, default=2.0, help="unrecorded seconds at 0.8·S first")
    load.add_argument("--base-factor", type=float, default=0.8)
    load.add_argument("--overload-factor", type=float, default=4.0)
    load.add_argument("--max-connections", type=int, default=4096,
                      help="client pool limit: the server holds queued requests' connections, up to max-queue-size of them")  # fmt: skip
    load.add_argument(
        "--client-timeout-s", type=float, default=90.0, help="client gives up on an answer after this"
    )
    load.add_argument("--rate", type=float, help="skip step 1 and use this S")
    load.add_argument(
        "--open-env", action="append", default=[], metavar="KEY=VALUE",
        help="settings for the open-loop server only (a second server; S is measured without them): "
        "e.g. MODELFLEET_MAX_QUEUE_WAIT_S=0.03, a latency budget a closed loop of 32 would exceed by design",
    )  # fmt: skip
    a = parser.parse_args()
    raise_file_limit(a.max_connections + 256)

    started: Server | None = None
    if a.url is None:
        ensure_repo(a.repo, a.model)
        env = {
            "MODELFLEET_MAX_QUEUE_SIZE": str(a.max_queue_size),
            "MODELFLEET_REQUEST_TIMEOUT_S": str(a.request_timeout_s),
            **dict(item.split("=", 1) for item in a.server_env),
        }
        args = [
            "--intra-op-threads",
            str(a.intra_op_threads),
            "--startup-load",
            "pinned",
            "--log-level",
            "warning",
        ]
        started = Server(a.repo, env, args)
        url, pid, settings = started.url, started.proc.pid, started.describe()
    else:
        url, pid = a.url.rstrip("/"), a.pid
        settings = f"{url} (given; its settings are its own)"
    print(f"machine: {machine()}\nserver: {settings}", flush=True)
    try:
        if a.rate is None:
            closed = sustainable_rate(url, a)
        else:
            closed = {
                "requests_per_s": a.rate,
                "latency_ms": {"p50": None, "p99": None},
                "errors": {"total": 0},
            }
        rate = float(closed["requests_per_s"])
        if rate <= 0:
            raise SystemExit("the closed loop completed no request: is the model served?")
        print(f"S = {rate:.1f} req/s", flush=True)
        if a.open_env and started is not None:
            started.stop()
            env |= dict(item.split("=", 1) for item in a.open_env)
            started = Server(a.repo, env, args)
            url, pid = started.url, started.proc.pid
            settings += f"\nopen-loop server: {started.describe()}"
            print(f"open-loop server: {started.describe()}", flush=True)
        run = open_loop(url, pid, a, [a.base_factor * rate, a.overload_factor * rate, a.base_factor * rate])
    finally:
        if started is not None:
            started.stop()
    summarize(a, closed, rate, run, settings)


if __name__ == "__main__":
    main()
