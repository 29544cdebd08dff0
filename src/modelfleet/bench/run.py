"""One bench run end to end: prepare the workload, split it over client processes, merge results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from modelfleet.bench.client import Share, event_loop_factory
from modelfleet.bench.messages import ShareJob, Workload
from modelfleet.bench.spec import BenchSpec
from modelfleet.bench.stats import BenchResult, merge
from modelfleet.bench.worker import run_in_processes
from modelfleet.bench.workload import build_workload


def split_jobs(spec: BenchSpec, workload: Workload) -> list[ShareJob]:
    """One job per client process, the connections dealt out as evenly as they go."""
    per_process, extra = divmod(spec.concurrency, spec.processes)
    return [
        ShareJob(
            workload=workload,
            connections=per_process + (i < extra),
            warmup_s=spec.warmup_s,
            duration_s=spec.duration_s,
            timeout_s=spec.timeout_s,
            seed=spec.seed + i,
        )
        for i in range(spec.processes)
    ]


def run_bench(spec: BenchSpec, log: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Run the load described by `spec`; SetupError or ValueError when it cannot start."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        workload = runner.run(build_workload(spec, log))
        jobs = split_jobs(spec, workload)
        log(
            f"{spec.concurrency} connections over {spec.processes} process(es): "
            f"{spec.warmup_s:g} s warm-up, then {spec.duration_s:g} s recorded"
        )
        results = [runner.run(Share(jobs[0]).run())] if len(jobs) == 1 else run_in_processes(jobs)
    return merge(results, workload.models, spec.duration_s, spec.top_models)
