"""Issue 16 item 5: tenant isolation with a stated bound, measured against `modelfleet serve`.

    Tenant A offers 10x the server's capacity S (open loop) while tenant B sends a steady 20 % of
    S: B's P99 stays within 2x its solo P99 (B alone at 20 % of S, same server, same run) and B
    gets no 429.

Two layouts, each on its own demo repository (built here if missing):

  separate   A -> tenant-00001, B -> tenant-00002, full fine-tuned copies of minilm-sentiment
             (`demo-repo --tenants 2 --full-copies`): two ONNX sessions, two executors, one CPU.
  adapters   A -> tenant-00001, B -> tenant-00002, heads over minilm-base (`demo-repo --tenants 2`):
             both tenants' requests go through the base's one executor (round robin by adapter).

Per layout:
1. S: `modelfleet bench` closed loop over both models on a server without keys.
2. A server with a keys file: A's quota a fraction of S (`--a-rate-fraction`, `--a-max-concurrent`;
   what an operator would give a tenant: half the machine, a few requests in flight), B without
   a quota.
3. One open loop per tenant (the project's load generator, `modelfleet.bench`: its schedule, pool
   and records), each in its own process, started together: B at `--victim-fraction`·S all along;
   A at `--attack-factor`·S in every other `--window-s` window (from a `--gap-s` gap before it; the
   gaps, where A switches on and off, are not counted), so that B's solo and attacked windows
   alternate and share the machine's background load. B's P99 is pooled over each kind of window.
   The key travels as the load generator's `api_key` (an `Authorization: Bearer` header).

    python benchmarks/isolation.py                                  # both layouts, 5 rounds
    python benchmarks/isolation.py --layout adapters --rounds 8 --window-s 15
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from overload import Server, machine, raise_file_limit, sustainable_rate

from modelfleet.bench.client import event_loop_factory
from modelfleet.bench.openloop import OpenShare
from modelfleet.bench.openstats import FAILURE_NAMES, Records, merge_open
from modelfleet.bench.run import split_jobs
from modelfleet.bench.schedule import phase_bounds_ns
from modelfleet.bench.spec import BenchSpec, Encoding, ModelSelection, Phase, Target
from modelfleet.bench.workload import build_workload

P99_RATIO_TARGET = 2.0
MODEL_A, MODEL_B = "tenant-00001", "tenant-00002"
KEY_ENV = "ISOLATION_KEY"  # the load child's key: in its environment, not on its command line
OFF_RATE = 0.01  # A "off": one request per 100 s (a phase needs a positive rate)
LAYOUTS = {"separate": ["--full-copies"], "adapters": []}


# ---------------------------------------------------------------------------------------------
# the load child: one open loop of modelfleet.bench with the tenant's key on every request


def body_file(folder: Path, seq: int) -> Path:
    """One V2 JSON body for the MiniLM tenants: input_ids and attention_mask [1, seq]."""
    ids = [101, *np.random.default_rng(0).integers(1000, 29000, seq - 2).tolist(), 102]
    doc = {
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [1, seq], "data": ids},
            {"name": "attention_mask", "datatype": "INT64", "shape": [1, seq], "data": [1] * seq},
        ]
    }
    path = folder / f"body-{seq}.json"
    path.write_text(json.dumps(doc))
    return path


def pooled(records: Records, phases: list[Phase], kinds: list[str]) -> dict[str, Any]:
    """Per kind of window, every request scheduled in such a window pooled: counts and ok latency."""
    bounds = phase_bounds_ns(phases)
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(kinds):
        inside = np.zeros(len(records.scheduled), dtype=bool)
        for (begin, end), k in zip(bounds, kinds, strict=True):
            if k == kind:
                inside |= (records.scheduled >= begin) & (records.scheduled < end)
        status = records.status[inside]
        ok_ms = records.latency[inside & records.ok] / 1e6
        codes, counts = np.unique(status, return_counts=True)
        out[kind] = {
            "windows": kinds.count(kind),
            "scheduled": int(inside.sum()),
            "ok": int(ok_ms.size),
            "statuses": {str(c): n for c, n in zip(codes.tolist(), counts.tolist(), strict=True) if c > 0},
            "failures": {
                FAILURE_NAMES[c]: n for c, n in zip(codes.tolist(), counts.tolist(), strict=True) if c < 0
            },
            "p50": float(np.percentile(ok_ms, 50)) if ok_ms.size else None,
            "p99": float(np.percentile(ok_ms, 99)) if ok_ms.size else None,
            "max": float(ok_ms.max()) if ok_ms.size else None,
        }
    out["per_window"] = [
        {"kind": k, **dict(zip(("p50", "p99"), _window_p(records, b, e), strict=True))}
        for (b, e), k in zip(bounds, kinds, strict=True)
    ]
    return out


def _window_p(records: Records, begin: int, end: int) -> tuple[float | None, float | None]:
    ok_ms = records.latency[(records.scheduled >= begin) & (records.scheduled < end) & records.ok] / 1e6
    if not ok_ms.size:
        return None, None
    return float(np.percentile(ok_ms, 50)), float(np.percentile(ok_ms, 99))


def load_main(argv: list[str]) -> None:
    """One tenant's open loop over windows of given rates; waits for "go" on stdin to start, so
    that two tenants' schedules begin together."""
    p = argparse.ArgumentParser(prog="isolation.py load")
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--windows", required=True, help="JSON [[kind, seconds, rate], ...]")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--max-connections", type=int, default=512)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    key = os.environ[KEY_ENV]
    windows = json.loads(a.windows)
    kinds = [str(k) for k, _, _ in windows]
    phases = [Phase(float(d), float(r)) for _, d, r in windows]
    raise_file_limit(a.max_connections + 256)
    with tempfile.TemporaryDirectory() as tmp:
        spec = BenchSpec(
            target=Target.parse(a.url),
            models=ModelSelection(names=(a.model,)),
            encoding=Encoding.BINARY,
            input_file=body_file(Path(tmp), a.seq),
            phases=tuple(phases),
            warmup_s=a.warmup,
            timeout_s=a.timeout,
            max_connections=a.max_connections,
            api_key=key,
        )
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            workload = runner.run(build_workload(spec))
            (job,) = split_jobs(spec, workload)
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("no go")
            result = runner.run(OpenShare(job).run())
    figures = merge_open([result], workload.models, spec).open_loop
    assert figures is not None
    doc = {
        "kinds": pooled(Records.concat([result]), phases, kinds),
        "send_lag_p99_ms": figures.send_lag.p99_ms,
        "peak_connections": figures.peak_connections,
        "sent_per_s": [p.send_rate_per_s for p in figures.phases],
    }
    a.out.write_text(json.dumps(doc))


# ---------------------------------------------------------------------------------------------
# the parent: servers, windows, figures


class Load:
    """A load child in its own process, started when `go` is called."""

    def __init__(
        self, url: str, model: str, key: str, windows: list[tuple[str, float, float]], a: Any, out: Path
    ) -> None:
        self.out = out
        command = [
            sys.executable, __file__, "load", "--url", url, "--model", model, "--windows", json.dumps(windows),
            "--seq", str(a.seq), "--max-connections", str(a.max_connections), "--out", str(out),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, KEY_ENV: key},
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.wait(30)
            raise SystemExit(f"load child failed to start (exit {self.proc.returncode}): {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout_s: float) -> dict[str, Any]:
        if self.proc.wait(timeout_s) != 0:
            raise SystemExit(f"load child exited with {self.proc.returncode}")
        doc: dict[str, Any] = json.loads(self.out.read_text())
        return doc


def keys_file(folder: Path, keys: dict[str, str], quota_a: dict[str, Any]) -> Path:
    digest = {name: hashlib.sha256(key.encode()).hexdigest() for name, key in keys.items()}
    doc = {
        "tenants": {
            "a": {"keys": [digest["a"]], "models": [MODEL_A], "quota": quota_a},
            "b": {"keys": [digest["b"]], "models": [MODEL_B]},
        }
    }
    path = folder / "keys.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def capacity(repo: Path, a: argparse.Namespace) -> dict[str, Any]:
    """S: the closed loop over both tenants' models on a server without keys (overload.py's step)."""
    server = Server(
        repo, {}, ["--startup-load", "all", "--log-level", "warning", *shlex.split(a.server_args)]
    )
    try:
        ns = argparse.Namespace(
            model=f"{MODEL_A},{MODEL_B}", seq=a.seq, encoding="binary", client_timeout_s=30.0,
            concurrency=a.concurrency, sustain_s=a.sustain_s, sustain_warmup_s=3.0,
        )  # fmt: skip
        return sustainable_rate(server.url, ns)
    finally:
        server.stop()


def run_layout(layout: str, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    repo = a.repo_prefix.with_name(f"{a.repo_prefix.name}-{layout}")
    if not (repo / MODEL_B).is_dir():
        print(f"building {repo}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "modelfleet", "demo-repo", str(repo), "--tenants", "2", *LAYOUTS[layout]],
            check=True,
        )
    print(f"\n=== layout {layout}: {repo}", flush=True)
    closed = capacity(repo, a)
    s = float(closed["requests_per_s"])
    print(f"S = {s:.1f} req/s (P50 {closed['latency_ms']['p50']} ms, P99 {closed['latency_ms']['p99']} ms)")
    quota_a: dict[str, Any] = {"rate_per_s": round(a.a_rate_fraction * s, 1)}
    if a.a_max_concurrent:
        quota_a["max_concurrent"] = a.a_max_concurrent
    keys = {"a": secrets.token_urlsafe(32), "b": secrets.token_urlsafe(32)}
    settings = {"MODELFLEET_AUTH_KEYS_FILE": str(keys_file(tmp, keys, quota_a))}
    server = Server(
        repo, settings, ["--startup-load", "all", "--log-level", "warning", *shlex.split(a.server_args)]
    )
    rate_b, rate_a = a.victim_fraction * s, a.attack_factor * s
    # B steady throughout; A on from the gap before each attacked window to its end, nearly off
    # (0.01/s: a phase needs a positive rate) otherwise; the gaps take the transitions
    windows_b: list[tuple[str, float, float]] = []
    windows_a: list[tuple[str, float, float]] = []
    for _ in range(a.rounds):
        for kind, seconds, a_rate in (
            ("solo", a.window_s, OFF_RATE), ("gap", a.gap_s, rate_a), ("attacked", a.window_s, rate_a),
            ("gap", a.gap_s, OFF_RATE),
        ):  # fmt: skip
            windows_b.append((kind, seconds, rate_b))
            windows_a.append(("on" if a_rate > OFF_RATE else "off", seconds, a_rate))
    total_s = sum(d for _, d, _ in windows_b)
    try:
        victim = Load(server.url, MODEL_B, keys["b"], windows_b, a, tmp / f"{layout}-b.json")
        attacker = Load(server.url, MODEL_A, keys["a"], windows_a, a, tmp / f"{layout}-a.json")
        victim.wait_ready()
        attacker.wait_ready()
        print(f"{a.rounds} rounds of B solo {a.window_s:g} s / A on, B attacked {a.window_s:g} s "
              f"({total_s:g} s)", flush=True)  # fmt: skip
        attacker.go()
        victim.go()
        b = victim.result(total_s + 120)
        at = attacker.result(total_s + 120)
    finally:
        server.stop()
    return {"layout": layout, "repo": str(repo), "S": s, "closed": closed, "quota_a": quota_a, "rate_a": rate_a,
            "rate_b": rate_b, "b": b, "a": at, "server": server.describe()}  # fmt: skip


def report(results: list[dict[str, Any]], a: argparse.Namespace) -> None:
    print(f"\nmachine: {machine()}")
    print(
        f"B at {a.victim_fraction:g}·S throughout; A at {a.attack_factor:g}·S in every other {a.window_s:g} s window "
        f"({a.rounds} rounds, {a.gap_s:g} s gaps not counted)"
    )
    for res in results:
        solo, attacked = res["b"]["kinds"]["solo"], res["b"]["kinds"]["attacked"]
        on = res["a"]["kinds"]["on"]
        windows = res["b"]["kinds"]["per_window"]
        pairs = [
            (w["p99"], x["p99"])
            for w, x in zip(windows[0::4], windows[2::4], strict=True)
            if w["p99"] and x["p99"]
        ]
        ratios = [x / w for w, x in pairs]
        ratio = attacked["p99"] / solo["p99"] if solo["p99"] and attacked["p99"] else float("nan")
        b429 = sum(
            k["statuses"].get("429", 0) for name, k in res["b"]["kinds"].items() if name != "per_window"
        )
        holds = ratio <= P99_RATIO_TARGET and b429 == 0
        closed = res["closed"]["latency_ms"]
        print(f"\n--- {res['layout']}: S = {res['S']:.1f} req/s (closed loop -c {a.concurrency}, "
              f"P50 {closed['p50']} ms, P99 {closed['p99']} ms)")  # fmt: skip
        print(f"server: {res['server']}")
        print(f"A's quota {res['quota_a']}; A asked {res['rate_a']:.0f}/s when on, B {res['rate_b']:.1f}/s")
        for name, k in (("B solo", solo), ("B attacked", attacked), ("A on", on)):
            print(
                f"  {name:<11} {k['windows']} windows: scheduled {k['scheduled']}, ok {k['ok']}, statuses "
                f"{k['statuses']}, client {k['failures'] or '-'}; ok P50 {k['p50']:.1f} ms, P99 {k['p99']:.1f} ms, "
                f"max {k['max']:.1f} ms"
            )
        print(f"  A's send rate per window {[round(x) for x in res['a']['sent_per_s']]}/s, "
              f"send lag P99 {res['a']['send_lag_p99_ms']:.1f} ms")  # fmt: skip
        print(f"  per round B P99 solo -> attacked: {', '.join(f'{w:.0f} -> {x:.0f}' for w, x in pairs)} ms; "
              f"ratios {[round(r, 2) for r in ratios]} (median {statistics.median(ratios):.2f})")  # fmt: skip
        print(
            f"  B P99 pooled: solo {solo['p99']:.1f} ms, attacked {attacked['p99']:.1f} ms = {ratio:.2f}x "
            f"(target <= {P99_RATIO_TARGET:g}x); B 429s {b429} -> {'HOLDS' if holds else 'DOES NOT HOLD'}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layout", choices=("separate", "adapters", "both"), default="both")
    parser.add_argument("--repo-prefix", type=Path, default=Path("/tmp/mfiso"),
                        help="repositories PREFIX-separate and PREFIX-adapters (built if missing)")  # fmt: skip
    parser.add_argument("--seq", type=int, default=16, help="sequence length of the requests")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop connections for S")
    parser.add_argument("--sustain-s", type=float, default=10.0, help="recorded seconds of the closed loop")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of windows: B solo, then B attacked")
    parser.add_argument("--window-s", type=float, default=10.0, help="seconds of each window")
    parser.add_argument("--gap-s", type=float, default=2.0, help="unrecorded seconds around A's switching")
    parser.add_argument("--attack-factor", type=float, default=10.0, help="A's offered rate, times S")
    parser.add_argument("--victim-fraction", type=float, default=0.2, help="B's rate, times S")
    parser.add_argument("--a-rate-fraction", type=float, default=0.5, help="A's quota rate_per_s, times S")
    parser.add_argument("--a-max-concurrent", type=int, default=4, help="A's quota max_concurrent (0: none)")
    parser.add_argument("--max-connections", type=int, default=512, help="each load's connection pool")
    parser.add_argument("--server-args", default="--compute-slots 1",
                        help="extra `modelfleet serve` options for both servers (default: one compute slot)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every figure here too")
    a = parser.parse_args()
    raise_file_limit(4 * a.max_connections + 256)
    print(f"machine: {machine()}", flush=True)
    layouts = ["separate", "adapters"] if a.layout == "both" else [a.layout]
    with tempfile.TemporaryDirectory(prefix="mfiso-") as tmp:
        results = [run_layout(layout, a, Path(tmp)) for layout in layouts]
    report(results, a)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
