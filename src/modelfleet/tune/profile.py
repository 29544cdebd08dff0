"""One configuration measured: `modelfleet serve` on a scratch copy of the model with the
configuration's settings, then a closed-loop ramp of concurrency (1, 2, 4, …) with the bench
package until the P90 passes the SLO, errors pass their threshold, throughput stops growing, or
the ramp's top is reached (ramp.py's rules); the capacity step of a contender is then measured
again, longer. `profile_model` runs a search over the space and writes profile.json.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelfleet.bench.run import closed_loop_step
from modelfleet.bench.stats import BenchResult
from modelfleet.bench.workload import SetupError
from modelfleet.repository.config import CONFIG_FILENAME
from modelfleet.tune import ramp as rules
from modelfleet.tune import search
from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.machine import this_machine, version_digest
from modelfleet.tune.schema import PROFILE_FILENAME, Measurement, Profile, Settings, Slo, Step, Stopped
from modelfleet.tune.server import pss_bytes, scratch_repository, serving
from modelfleet.tune.sources import model_folder, versions
from modelfleet.tune.sweep import Space


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """What one `modelfleet profile` run measures (parsed once at the CLI edge)."""

    repository: Path
    seq_lens: tuple[int, ...]
    space: Space
    slo: Slo
    search: str = "brute"  # brute | quick
    step_s: float = 2.0
    warmup_s: float = 0.5
    confirm_steps: float = 1.0
    """A contender's capacity step is measured again for this many steps' time (0: it is not): a
    second window, chosen on the first's figures but measured apart from them, so the winner's
    figure is not the luckiest of many (2 steps made a brute-force profile 588 s on 2 cores)."""
    final_s: float = 10.0
    """After the search at each length, the best configuration's capacity step is measured once
    more, this many seconds on a fresh server (one concurrency lower too when it comes back over the
    bound), and that step is its capacity (0: no final step). A capacity step is one 2 s window
    (confirmed by a second), and a 20 s bench at its concurrency differed from it by -24 to +17 %
    (docs/benchmarks.md, issue 13, third pass)."""
    max_concurrency: int = 64
    version: str | None = None
    instance_type: str | None = None
    out: Path | None = None
    mixed: tuple[Length, ...] = ()
    """Mixed-length traffic, (shortest, longest) each: requests of lengths spread between them."""

    def __post_init__(self) -> None:
        longest = [hi for _, hi in self.mixed]
        checks = [
            (self.search in ("brute", "quick"), f"--search must be brute or quick, not '{self.search}'"),
            (
                bool(self.seq_lens or self.mixed) and min((*self.seq_lens, *longest), default=0) >= 1,
                f"--seq-lens must be positive, got {self.seq_lens}",
            ),
            (
                all(1 <= lo < hi for lo, hi in self.mixed),
                f"--seq-lens LO-HI needs 1 <= LO < HI, got {list(self.mixed)}",
            ),
            (
                len(set(longest)) == len(longest) and not set(longest) & set(self.seq_lens),
                "--seq-lens: each length and each mix's longest must differ (a profile's sequence "
                "length is a mix's longest)",
            ),
            (self.step_s > 0, f"--step-s must be positive, got {self.step_s}"),
            (self.warmup_s >= 0, f"--warmup-s must not be negative, got {self.warmup_s}"),
            (self.confirm_steps >= 0, f"--confirm-steps must not be negative, got {self.confirm_steps}"),
            (self.final_s >= 0, f"--final-s must not be negative, got {self.final_s}"),
            (self.max_concurrency >= 1, f"--max-concurrency must be at least 1, got {self.max_concurrency}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


Progress = Callable[[str], None]
Length = tuple[int, int]  # (shortest, longest) of the requests; equal for one fixed length
MIXED_BODIES = 32  # distinct request bodies (lengths) of mixed-length traffic


def lengths(spec: ProfileSpec) -> list[Length]:
    """Every traffic the spec measures, in order: the fixed lengths, then the mixes."""
    return [(n, n) for n in spec.seq_lens] + list(spec.mixed)


def _step(concurrency: int, result: BenchResult, duration_s: float | None = None) -> Step:
    def ms(value: float) -> float | None:
        return None if value != value else round(value, 3)  # NaN: no answer at all

    return Step(
        concurrency=concurrency,
        requests=result.requests,
        errors=result.error_total,
        throughput_per_s=round(result.requests_per_s, 3),
        p50_ms=ms(result.latency.p50_ms),
        p90_ms=ms(result.latency.p90_ms),
        p99_ms=ms(result.latency.p99_ms),
        duration_s=duration_s,
    )


def _run_step(
    url: str,
    model: str,
    length: Length,
    spec: ProfileSpec,
    concurrency: int,
    duration_s: float,
    warmup_s: float | None = None,
) -> Step:
    try:
        result = closed_loop_step(
            url,
            model,
            concurrency,
            duration_s,
            warmup_s=spec.warmup_s if warmup_s is None else warmup_s,
            seq_len=length[0],
            timeout_s=max(10.0, spec.slo.p90_ms * 20 / 1000),
            seq_len_max=length[1] if length[1] > length[0] else None,
            bodies=MIXED_BODIES if length[1] > length[0] else 4,
        )
    except (SetupError, ValueError) as exc:
        raise TuneInputError(f"the load generator cannot run against {model}: {exc}") from None
    return _step(concurrency, result, None if duration_s == spec.step_s else duration_s)


def ramp(
    url: str, model: str, length: Length, spec: ProfileSpec, progress: Progress, start: int = 1
) -> tuple[list[Step], Stopped]:
    """Closed-loop steps of doubling concurrency from `start`; (steps, why the ramp stopped)."""
    steps: list[Step] = []
    last: Step | None = None  # the step the server ran just before (None: it is fresh)
    for concurrency in (c for c in rules.concurrency_steps(spec.max_concurrency) if c >= start):
        progress(f"c={concurrency}")
        warmup_s = rules.warmup_after(last, spec.warmup_s)
        duration_s = rules.step_seconds(last, concurrency, spec.step_s, spec.slo)
        try:
            last = _run_step(url, model, length, spec, concurrency, duration_s, warmup_s)
        except KeyboardInterrupt:
            return steps, "interrupted"
        steps.append(last)
        stopped = rules.stop_reason(steps, spec.slo)
        if (lower := rules.step_back(steps, stopped, spec.max_concurrency)) is not None:
            warmup_s = rules.warmup_after(last, spec.warmup_s)
            try:
                last = _run_step(url, model, length, spec, lower, spec.step_s, warmup_s)
            except KeyboardInterrupt:
                return steps, "interrupted"
            steps.insert(0, last)
        if stopped is not None:
            return steps, stopped
    return steps, "max_concurrency"


def confirm(
    url: str,
    model: str,
    length: Length,
    spec: ProfileSpec,
    steps: list[Step],
    floor: float,
    progress: Progress,
) -> tuple[list[Step], list[int], bool]:
    """The capacity step measured again, `spec.confirm_steps` steps long, its figures replacing the
    short step's (see ramp.to_confirm); (steps, the concurrencies measured again, whether Ctrl-C came)."""
    steps, confirmed = list(steps), set[int]()
    while (
        spec.confirm_steps > 0 and (index := rules.to_confirm(steps, spec.slo, confirmed, floor)) is not None
    ):
        concurrency = steps[index].concurrency
        progress(f"c={concurrency} again")
        try:
            steps[index] = _run_step(url, model, length, spec, concurrency, spec.confirm_steps * spec.step_s)
        except KeyboardInterrupt:
            return steps, _concurrencies(steps, confirmed), True
        confirmed.add(index)
    return steps, _concurrencies(steps, confirmed), False


def _concurrencies(steps: list[Step], indices: set[int]) -> list[int]:
    return sorted(steps[i].concurrency for i in indices)


def measure(
    scratch: Path,
    model: str,
    settings: Settings,
    length: Length,
    spec: ProfileSpec,
    workdir: Path,
    progress: Progress,
    start: int = 1,
    floor: float = 0.0,
) -> Measurement:
    """One configuration at one sequence length (or mix), its ramp from concurrency `start`, its
    capacity step confirmed when it carries at least `floor`; a server that cannot start is
    recorded as failed."""
    seq_len, seq_len_min = length[1], (length[0] if length[0] < length[1] else None)
    load_s: float | None = None
    cold_s: float | None = None
    confirmed: list[int] = []
    started = time.monotonic()
    try:
        with serving(scratch, model, settings, workdir) as server:
            up_s = server.wait_ready()
            cold_s = server.cold_start(seq_len)
            load_s = up_s + cold_s
            steps, stopped = ramp(server.url, model, length, spec, progress, start)
            if stopped != "interrupted":
                steps, confirmed, interrupted = confirm(
                    server.url, model, length, spec, steps, floor, progress
                )
                stopped = "interrupted" if interrupted else stopped
            memory = pss_bytes(server.proc.pid)
    except TuneInputError as exc:
        return Measurement(
            settings=settings,
            seq_len=seq_len,
            seq_len_min=seq_len_min,
            steps=[],
            load_s=None if load_s is None else round(load_s, 3),
            cold_start_s=None if cold_s is None else round(cold_s, 3),
            memory_bytes=None,
            stopped="failed",
            error=str(exc),
            elapsed_s=round(time.monotonic() - started, 3),
        )
    return Measurement(
        settings=settings,
        seq_len=seq_len,
        seq_len_min=seq_len_min,
        steps=steps,
        load_s=None if load_s is None else round(load_s, 3),
        cold_start_s=None if cold_s is None else round(cold_s, 3),
        memory_bytes=memory,
        stopped=stopped,
        elapsed_s=round(time.monotonic() - started, 3),
        confirmed=confirmed,
    )


def finish(
    scratch: Path,
    model: str,
    measurement: Measurement,
    length: Length,
    spec: ProfileSpec,
    workdir: Path,
    progress: Progress,
) -> tuple[Measurement, bool]:
    """`measurement` with its final steps (ramp.final_concurrency), measured on a fresh server
    `spec.final_s` long each, in place of the ramp's figures at their concurrencies; (the
    measurement, whether Ctrl-C came: what was measured before it is kept). A server that cannot
    start leaves the measurement as it was."""
    steps, final = list(measurement.steps), list[int]()
    interrupted = False
    started = time.monotonic()
    try:
        with serving(scratch, model, measurement.settings, workdir) as server:
            server.wait_ready()
            server.cold_start(length[1])
            while (
                concurrency := rules.final_concurrency(steps, spec.slo, final, spec.max_concurrency)
            ) is not None:
                progress(f"c={concurrency} final {spec.final_s:g} s")
                try:
                    step = _run_step(
                        server.url, model, length, spec, concurrency, spec.final_s, rules.FINAL_WARMUP_S
                    )
                except KeyboardInterrupt:
                    interrupted = True
                    break
                steps, final = rules.with_step(steps, step), [*final, concurrency]
    except TuneInputError:
        return measurement, False
    except KeyboardInterrupt:  # between steps: while the server starts or stops
        interrupted = True
    elapsed = (measurement.elapsed_s or 0.0) + time.monotonic() - started
    return measurement.model_copy(
        update={
            "steps": steps,
            "final": sorted(final),
            "final_s": spec.final_s if final else None,
            "elapsed_s": round(elapsed, 3),
            "stopped": "interrupted" if interrupted else measurement.stopped,
        }
    ), interrupted


def resolve_version(spec: ProfileSpec, model: str) -> tuple[Path, str]:
    folder = model_folder(spec.repository, model)
    available = versions(folder)
    version = spec.version or available[0]
    if version not in available:
        raise TuneInputError(f"model '{model}' has no version {version} (versions: {', '.join(available)})")
    config = folder / CONFIG_FILENAME
    if config.is_file():
        text = config.read_text(encoding="utf-8")
        if any(key in text for key in ("backend: adapter", "backend: ensemble")):
            raise TuneInputError(f"'{model}' is an adapter or an ensemble: profile the models it runs on")
    return folder, version


def write_profile(profile: Profile, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(profile.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def profile_model(
    spec: ProfileSpec,
    model: str,
    progress: Callable[[str, int, int], None] = lambda _text, _done, _total: None,
) -> tuple[Profile, Path]:
    """Search every sequence length's space for `model`, writing profile.json after each configuration
    (so that Ctrl-C or a crash keeps what was measured); returns the profile and where it is."""
    folder, version = resolve_version(spec, model)
    path = spec.out or folder / version / PROFILE_FILENAME
    started, started_at = time.monotonic(), datetime.now(UTC)
    measured: list[Measurement] = []
    interrupted = False
    quick = spec.search == "quick"
    share = rules.QUICK_CONTENDER_SHARE if quick else rules.CONTENDER_SHARE
    final_configs = rules.QUICK_FINAL_CONFIGS if quick else rules.FINAL_CONFIGS
    grid = len(spec.space.grid())
    total = (search.quick_budget(grid) if quick else grid) * len(lengths(spec))  # at most

    def document() -> Profile:
        return Profile(
            model=model,
            version=version,
            model_digest=digest,
            created_at=started_at.isoformat(timespec="seconds"),
            machine=machine,
            instance_type=spec.instance_type,
            slo=spec.slo,
            search="quick" if spec.search == "quick" else "brute",
            step_duration_s=spec.step_s,
            elapsed_s=round(time.monotonic() - started, 1),
            interrupted=interrupted,
            measurements=measured,
        )

    digest = version_digest(folder / version)
    machine = this_machine()
    with tempfile.TemporaryDirectory(prefix="modelfleet-profile-") as tmp:
        scratch = scratch_repository(spec.repository, model, version, Path(tmp))
        best_so_far: Settings | None = None
        for length in lengths(spec):

            def one(settings: Settings, length: Length = length) -> Measurement:
                shown = f"{length[0]}-{length[1]}" if length[0] < length[1] else f"{length[1]}"
                label = f"{model} s{shown} {settings.name}"
                progress(label, len(measured), total)
                m = measure(
                    scratch,
                    model,
                    settings,
                    length,
                    spec,
                    Path(tmp),
                    lambda s: progress(f"{label} {s}", len(measured), total),
                    rules.start_concurrency(measured, length[1], spec.slo) if quick else 1,
                    rules.contender_floor(measured, length[1], spec.slo, share),
                )
                measured.append(m)
                write_profile(document(), path)
                if m.stopped == "interrupted":
                    raise KeyboardInterrupt
                return m

            if quick:
                # the best configuration of the previous length is where this one starts climbing
                found = search.quick(spec.space, one, spec.slo, start=best_so_far)
            else:
                found = search.brute(spec.space, one)
            if found.interrupted:
                interrupted = True
                break
            finished = 0
            try:  # Ctrl-C between final steps (finish keeps what it measured before one)
                while (
                    spec.final_s > 0
                    and (chosen := rules.to_finish(measured, length[1], spec.slo, finished, final_configs))
                    is not None
                ):
                    label = f"{model} s{length[1]} {chosen.config}"
                    progress(label, len(measured), total)

                    def said(text: str, label: str = label) -> None:
                        progress(f"{label} {text}", len(measured), total)

                    index = measured.index(chosen)
                    measured[index], interrupted = finish(
                        scratch, model, chosen, length, spec, Path(tmp), said
                    )
                    finished += 1
                    write_profile(document(), path)
                    if interrupted:
                        break
            except KeyboardInterrupt:
                interrupted = True
            if interrupted:
                break
            best = rules.best_at(measured, length[1], spec.slo)
            best_so_far = None if best is None else best.settings
    profile = document()
    write_profile(profile, path)
    return profile, path
