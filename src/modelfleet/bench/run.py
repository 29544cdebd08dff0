"""One bench run end to end: prepare the workload, split it over client processes, merge results."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from modelfleet.bench.client import build_requests, event_loop_factory
from modelfleet.bench.httpwire import HTTPProtocolError, SetupConnection
from modelfleet.bench.messages import OpenLoopJob, OpenShareResult, ShareJob, ShareResult, Workload
from modelfleet.bench.openloop import OpenShare
from modelfleet.bench.openstats import merge_open
from modelfleet.bench.series import closed_figures
from modelfleet.bench.spec import BenchSpec, Encoding, ModelSelection, Target, UserPhase
from modelfleet.bench.stats import BenchResult, merge
from modelfleet.bench.worker import closed_share, run_in_processes
from modelfleet.bench.workload import SetupError, build_workload


def split_jobs(spec: BenchSpec, workload: Workload) -> list[ShareJob]:
    """One job per client process, the connections dealt out as evenly as they go (the open loop's
    arrivals too: each process sends its share of every phase's rate)."""
    connections = spec.max_connections if spec.open_loop else spec.concurrency
    per_process, extra = divmod(connections, spec.processes)

    def users(count: int) -> list[UserPhase]:
        if spec.open_loop:
            return []
        return list(spec.users) if spec.processes == 1 else [UserPhase(count, 0.0, spec.duration_s)]

    return [
        ShareJob(
            workload=workload,
            connections=per_process + (i < extra),
            warmup_s=spec.warmup_s,
            duration_s=spec.duration_s,
            timeout_s=spec.timeout_s,
            seed=spec.seed + i,
            open_loop=OpenLoopJob(list(spec.schedule), spec.arrivals, i, spec.processes)
            if spec.open_loop
            else None,
            users=users(per_process + (i < extra)),
            thresholds=spec.thresholds,
        )
        for i in range(spec.processes)
    ]


def describe(spec: BenchSpec) -> str:
    if spec.user_phases:
        ramp = " → ".join(
            f"{p.initial_users} users +{p.spawn_per_min:g}/min for {p.duration_s:g} s"
            for p in spec.user_phases
        )
        return f"closed loop over {spec.target.protocol}: {spec.warmup_s:g} s warm-up, then {ramp} recorded"
    if not spec.open_loop:
        return (
            f"{spec.concurrency} connections over {spec.processes} process(es): "
            f"{spec.warmup_s:g} s warm-up, then {spec.duration_s:g} s recorded"
        )
    rates = " → ".join(f"{p.rate_per_s:g}/s for {p.duration_s:g} s" for p in spec.schedule)
    return (
        f"open loop, {spec.arrivals} arrivals, up to {spec.max_connections} connections over "
        f"{spec.processes} process(es): {spec.warmup_s:g} s warm-up, then {rates} recorded"
    )


def run_bench(spec: BenchSpec, log: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Run the load described by `spec`; SetupError or ValueError when it cannot start."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        workload = runner.run(build_workload(spec, log))
        jobs = split_jobs(spec, workload)
        log(describe(spec))
        if spec.open_loop:
            if len(jobs) == 1:
                open_results = [runner.run(OpenShare(jobs[0]).run())]
            else:
                open_results = run_in_processes(jobs, OpenShareResult)
            return merge_open(open_results, workload.models, spec)
        if len(jobs) == 1:
            results = [runner.run(closed_share(jobs[0]).run())]
        else:
            results = run_in_processes(jobs, ShareResult)
    figures = closed_figures(results, spec.users)
    merged = merge(results, workload.models, figures.recorded_s or spec.duration_s, spec.top_models)
    return dataclasses.replace(merged, closed_loop=figures)


def closed_loop_step(
    url: str,
    model: str,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    seq_len: int = 16,
    timeout_s: float = 30.0,
    encoding: Encoding = Encoding.JSON,
    seq_len_max: int | None = None,
    bodies: int = 4,
) -> BenchResult:
    """One closed-loop step against one model of a V2 HTTP server: `concurrency` users for
    `duration_s` after `warmup_s`, every request of length `seq_len` (or `bodies` requests of
    lengths from `seq_len` to `seq_len_max`); SetupError or ValueError when it cannot run (tune's ramps)."""
    spec = BenchSpec(
        target=Target.parse(url),
        models=ModelSelection((model,)),
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        timeout_s=timeout_s,
        encoding=encoding,
        seq_len=seq_len,
        seq_len_max=seq_len_max,
        bodies=bodies,
    )
    return run_bench(spec)


def first_answer_s(url: str, model: str, seq_len: int = 16, timeout_s: float = 120.0) -> float:
    """Seconds a model's first user waits: from asking its metadata (a model not yet loaded is
    loaded then) to the answer of one inference. SetupError when either is refused."""
    spec = BenchSpec(
        target=Target.parse(url),
        models=ModelSelection((model,)),
        seq_len=seq_len,
        bodies=1,
        timeout_s=timeout_s,
    )

    async def once() -> float:
        started = time.perf_counter()
        workload = await build_workload(spec)
        conn = SetupConnection(spec.target, timeout_s)
        try:
            status, body = await conn.send(b"".join(build_requests(workload)[0][0]))
        except (OSError, HTTPProtocolError) as exc:
            raise SetupError(
                f"the first inference of {model} got no answer: {exc or type(exc).__name__}"
            ) from None
        finally:
            await conn.close()
        if status != 200:
            raise SetupError(f"the first inference of {model} answered HTTP {status}: {body[:200]!r}")
        return time.perf_counter() - started

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(once())
