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
3. Rounds of: B alone at `--victim-fraction`·S for `--phase-s`; then A at `--attack-factor`·S and
   B again, B's recorded window inside A's. Both are open loops of the project's load generator
   (`modelfleet.bench`: its schedule, pool and statistics), each in its own process; the key
   travels as an `X-Api-Key` header added to the pre-encoded requests (the CLI has no key option).

    python bench/isolation.py                                  # both layouts, 3 rounds
    python bench/isolation.py --layout adapters --rounds 5 --phase-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import yaml
from overload import Server, machine, raise_file_limit, sustainable_rate

from modelfleet.bench.client import event_loop_factory
from modelfleet.bench.encode import Body
from modelfleet.bench.messages import OpenShareResult
from modelfleet.bench.openloop import OpenShare
from modelfleet.bench.openstats import merge_open
from modelfleet.bench.report import report_document, write_report
from modelfleet.bench.run import split_jobs
from modelfleet.bench.spec import BenchSpec, Encoding, ModelSelection, Target
from modelfleet.bench.worker import run_in_processes
from modelfleet.bench.workload import build_workload

P99_RATIO_TARGET = 2.0
MODEL_A, MODEL_B = "tenant-00001", "tenant-00002"
KEY_ENV = "ISOLATION_KEY"  # the load child's key: in its environment, not on its command line
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


def keyed(body: Body, key: str) -> Body:
    """The same body with the tenant's key among its headers (Body.headers() writes content_type
    as the Content-Type value; the extra header line rides on it)."""
    return Body(body.content, f"{body.content_type}\r\nX-Api-Key: {key}", body.header_length)


def load_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="isolation.py load")
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--warmup", type=float, default=0.0)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--max-connections", type=int, default=512)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--report", type=Path, required=True)
    a = p.parse_args(argv)
    key = os.environ[KEY_ENV]
    raise_file_limit(a.max_connections + 256)
    with tempfile.TemporaryDirectory() as tmp:
        spec = BenchSpec(
            target=Target.parse(a.url),
            models=ModelSelection(names=(a.model,)),
            encoding=Encoding.BINARY,
            input_file=body_file(Path(tmp), a.seq),
            rate_per_s=a.rate,
            duration_s=a.duration,
            warmup_s=a.warmup,
            timeout_s=a.timeout,
            max_connections=a.max_connections,
            processes=a.processes,
        )
        started_at = datetime.now(UTC)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            workload = runner.run(build_workload(spec))
            workload = msgspec.structs.replace(workload, bodies=[keyed(b, key) for b in workload.bodies])
            jobs = split_jobs(spec, workload)
            print("started", flush=True)  # the parent times the other tenant's start from this line
            if len(jobs) == 1:
                results = [runner.run(OpenShare(jobs[0]).run())]
            else:
                results = run_in_processes(jobs, OpenShareResult)
        result = merge_open(results, workload.models, spec)
        write_report(a.report, report_document(spec, result, started_at))


# ---------------------------------------------------------------------------------------------
# the parent: servers, rounds, figures


class Load:
    """A load child in its own process."""

    def __init__(
        self, url: str, model: str, key: str, rate: float, duration: float, warmup: float, a: Any, out: Path
    ) -> None:
        self.report = out
        command = [
            sys.executable, __file__, "load", "--url", url, "--model", model, "--rate", f"{rate:.3f}",
            "--duration", f"{duration:g}", "--warmup", f"{warmup:g}", "--seq", str(a.seq),
            "--max-connections", str(a.max_connections), "--report", str(out),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env={**os.environ, KEY_ENV: key}
        )

    def wait_started(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "started":
            self.proc.wait(30)
            raise SystemExit(f"load child failed to start (exit {self.proc.returncode}): {line!r}")

    def result(self, timeout_s: float) -> dict[str, Any]:
        if self.proc.wait(timeout_s) != 0:
            raise SystemExit(f"load child exited with {self.proc.returncode}")
        doc: dict[str, Any] = json.loads(self.report.read_text())
        return doc["open_loop"]["total"]


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
    server = Server(repo, {}, ["--startup-load", "all", "--log-level", "warning"])
    try:
        ns = argparse.Namespace(
            model=f"{MODEL_A},{MODEL_B}", seq=a.seq, encoding="binary", client_timeout_s=30.0,
            concurrency=a.concurrency, sustain_s=a.sustain_s, sustain_warmup_s=3.0,
        )  # fmt: skip
        return sustainable_rate(server.url, ns)
    finally:
        server.stop()


def summary(report: dict[str, Any]) -> dict[str, Any]:
    counts = report["status_counts"]
    return {
        "asked_per_s": report["rate_per_s"],
        "sent_per_s": report["send_rate_per_s"],
        "ok": report["ok"],
        "429": counts.get("429", 0),
        "other": {k: v for k, v in counts.items() if k not in ("200", "429")} | report["client_failures"],
        "p50": report["latency_ms"]["ok"]["p50"],
        "p99": report["latency_ms"]["ok"]["p99"],
        "max": report["latency_ms"]["ok"]["max"],
    }


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
    server = Server(repo, settings, ["--startup-load", "all", "--log-level", "warning"])
    rate_b, rate_a = a.victim_fraction * s, a.attack_factor * s
    rounds: list[dict[str, Any]] = []
    try:
        for r in range(a.rounds):
            solo = Load(
                server.url, MODEL_B, keys["b"], rate_b, a.phase_s, 2.0, a, tmp / f"{layout}-{r}-solo.json"
            )
            solo.wait_started()
            b_solo = summary(solo.result(a.phase_s + 60))
            # A covers B's whole run: B's process start, warm-up, window, and a margin
            attack_s = a.phase_s + 2.0 + 8.0
            attacker = Load(
                server.url, MODEL_A, keys["a"], rate_a, attack_s, 0.0, a, tmp / f"{layout}-{r}-a.json"
            )
            attacker.wait_started()
            time.sleep(1.0)
            victim = Load(
                server.url, MODEL_B, keys["b"], rate_b, a.phase_s, 2.0, a, tmp / f"{layout}-{r}-b.json"
            )
            victim.wait_started()
            b_attacked = summary(victim.result(a.phase_s + 60))
            a_fig = summary(attacker.result(attack_s + 60))
            ratio = b_attacked["p99"] / b_solo["p99"] if b_solo["p99"] and b_attacked["p99"] else float("nan")
            rounds.append({"b_solo": b_solo, "b_attacked": b_attacked, "a": a_fig, "ratio": ratio})
            print(
                f"round {r + 1}: B solo P99 {b_solo['p99']:.1f} ms, under attack {b_attacked['p99']:.1f} ms "
                f"({ratio:.2f}x), B 429 {b_attacked['429']}, B other {b_attacked['other'] or '-'}; "
                f"A sent {a_fig['sent_per_s']:.0f}/s: ok {a_fig['ok']}, 429 {a_fig['429']}, "
                f"other {a_fig['other'] or '-'}, ok P99 {a_fig['p99']} ms",
                flush=True,
            )
    finally:
        server.stop()
    return {"layout": layout, "repo": str(repo), "S": s, "closed": closed, "quota_a": quota_a,
            "rate_a": rate_a, "rate_b": rate_b, "rounds": rounds, "server": server.describe()}  # fmt: skip


def report(results: list[dict[str, Any]], a: argparse.Namespace) -> None:
    print(f"\nmachine: {machine()}")
    print(
        f"B at {a.victim_fraction:g}·S, A at {a.attack_factor:g}·S, {a.phase_s:g} s windows, {a.rounds} rounds"
    )
    for res in results:
        rounds = res["rounds"]
        solo = [r["b_solo"]["p99"] for r in rounds]
        attacked = [r["b_attacked"]["p99"] for r in rounds]
        ratios = [r["ratio"] for r in rounds]
        b429 = sum(r["b_attacked"]["429"] + r["b_solo"]["429"] for r in rounds)
        b_other = [r["b_attacked"]["other"] for r in rounds if r["b_attacked"]["other"]]
        med = statistics.median(ratios)
        holds = med <= P99_RATIO_TARGET and b429 == 0
        closed = res["closed"]["latency_ms"]
        print(f"\n--- {res['layout']}: S = {res['S']:.1f} req/s (closed loop -c {a.concurrency}, "
              f"P50 {closed['p50']} ms, P99 {closed['p99']} ms)")  # fmt: skip
        print(f"server: {res['server']}")
        print(f"A's quota {res['quota_a']}; A asked {res['rate_a']:.0f}/s, B {res['rate_b']:.1f}/s")
        print(
            "round  B solo P50/P99 ms   B attacked P50/P99 ms   ratio  B 429  A sent/s   A ok   A 429  A ok P99 ms"
        )
        for i, r in enumerate(rounds):
            bs, ba, af = r["b_solo"], r["b_attacked"], r["a"]
            print(
                f"{i + 1:>5}  {bs['p50']:>7.1f} / {bs['p99']:>7.1f}  {ba['p50']:>9.1f} / {ba['p99']:>9.1f}  "
                f"{r['ratio']:>6.2f}  {ba['429']:>5}  {af['sent_per_s']:>8.0f}  {af['ok']:>5}  {af['429']:>6}  "
                f"{af['p99'] if af['p99'] is not None else '-':>11}"
            )
        print(
            f"median: B P99 solo {statistics.median(solo):.1f} ms, under attack {statistics.median(attacked):.1f} ms; "
            f"median ratio {med:.2f}x (target <= {P99_RATIO_TARGET:g}x); B 429s {b429}"
            + (f"; B other outcomes {b_other}" if b_other else "")
            + f" -> {'HOLDS' if holds else 'DOES NOT HOLD'}"
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=20.0, help="B's recorded window per run")
    parser.add_argument("--attack-factor", type=float, default=10.0, help="A's offered rate, times S")
    parser.add_argument("--victim-fraction", type=float, default=0.2, help="B's rate, times S")
    parser.add_argument("--a-rate-fraction", type=float, default=0.5, help="A's quota rate_per_s, times S")
    parser.add_argument("--a-max-concurrent", type=int, default=4, help="A's quota max_concurrent (0: none)")
    parser.add_argument("--max-connections", type=int, default=512, help="each load's connection pool")
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
