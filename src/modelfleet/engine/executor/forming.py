"""Which queued jobs run next, and together: priority, fairness between senders, batch forming.
Pure functions of the jobs and the batching contract (no threads, no clock)."""

from __future__ import annotations

from modelfleet.engine.executor.jobs import Batching, Job


def fair(jobs: list[Job]) -> list[Job]:
    """Priority first; then each sender's first job, each sender's second job, ...; then arrival."""
    ordered = sorted(jobs, key=_arrival)
    if len({(job.priority, job.label) for job in ordered}) <= 1:  # the usual case: arrival order alone
        return ordered
    seen: dict[str, int] = {}
    ranked = []
    for job in ordered:
        nth = seen.get(job.label, 0)
        seen[job.label] = nth + 1
        ranked.append((job.priority, nth, job.enqueued_ns, job))
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked]


def _arrival(job: Job) -> int:
    return job.enqueued_ns


def next_runs(jobs: list[Job], batching: Batching | None) -> tuple[list[list[Job]], list[Job]]:
    """What to run now (groups, one execution each), and what waits for the next round.

    Jobs go best priority first and, within a priority, round robin over the models (tenants)
    that sent them, so that one tenant's flood does not queue everyone else behind it. Without
    batching every job runs now, one by one; with batching the next batch is formed: jobs that
    can share an execution, at most max_rows rows, cut at a preferred batch size it reaches.
    """
    ordered = fair(jobs)
    if batching is None:
        return [[j] for j in ordered], []
    key = ordered[0].key()
    same = [j for j in ordered if j.key() == key]
    available = sum(j.rows for j in same)
    group: list[Job] = []
    rows = 0
    for job in same:
        if group and rows + job.rows > cut(rows, available, batching):
            break
        group.append(job)
        rows += job.rows
    chosen = {id(j) for j in group}
    return [group], [j for j in ordered if id(j) not in chosen]


def cut(rows: int, available: int, batching: Batching) -> int:
    """Where to close the current group: at a preferred size it can reach, else max_rows."""
    reachable = [p for p in batching.preferred if p <= min(available, batching.max_rows)]
    return reachable[-1] if reachable and rows >= reachable[-1] else batching.max_rows


def queued_work_ns(pending_rows: int, ns_per_row: float, instances: int) -> float:
    """How long the rows already in the system keep the model busy, by its measured cost."""
    return pending_rows * ns_per_row / instances
