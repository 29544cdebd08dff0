"""`modelfleet profile`: measure a model's configurations on this machine and write profile.json
(and a PNG of the latency-throughput curves) beside the model version. Option parsing only."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from modelfleet.tune.profile import ProfileSpec
    from modelfleet.tune.schema import Slo

EXIT_INTERRUPTED = 130  # Ctrl-C: what was measured is written
EXIT_INPUT = 2  # unknown model, bad option: nothing measured


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} expects comma-separated integers, got '{text}'") from None


def _lengths(text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """`32,128,16-128`: fixed lengths, and mixes LO-HI of lengths spread between LO and HI."""
    fixed: list[int] = []
    mixed: list[tuple[int, int]] = []
    try:
        for item in (v.strip() for v in text.split(",") if v.strip()):
            low, dash, high = item.partition("-")
            if dash:
                mixed.append((int(low), int(high)))
            else:
                fixed.append(int(item))
    except ValueError:
        raise typer.BadParameter(
            f"--seq-lens expects comma-separated lengths or LO-HI mixes (32,128,16-128), got '{text}'"
        ) from None
    return tuple(fixed), tuple(mixed)


def _buckets(text: str) -> tuple[tuple[int, ...] | None, ...]:
    """`none,32/64/128`: shape bucket sets to sweep, `none` for no buckets."""
    found: list[tuple[int, ...] | None] = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        try:
            found.append(() if item.lower() == "none" else tuple(int(v) for v in item.split("/")))
        except ValueError:
            raise typer.BadParameter(
                f"--buckets expects sets of sizes such as none,32/64/128, got '{item}'"
            ) from None
    return tuple(found)


def _slo(p90_ms: float, max_error_rate: float, margin: float) -> Slo:
    from pydantic import ValidationError

    from modelfleet.tune.schema import Slo

    try:
        return Slo(p90_ms=p90_ms, max_error_rate=max_error_rate, margin=margin)
    except ValidationError as exc:
        field = {"p90_ms": "--slo-ms", "max_error_rate": "--max-error-rate", "margin": "--slo-margin"}
        first = exc.errors()[0]
        name = field.get(str(first["loc"][0]), str(first["loc"][0]))
        raise ValueError(f"{name}: {first['msg']}, got {first['input']}") from None


def profile(
    repository: Annotated[Path, typer.Argument(help="Model repository (a folder).")],
    models: Annotated[list[str], typer.Argument(help="Models to profile.")],
    seq_lens: Annotated[
        str,
        typer.Option(
            "--seq-lens",
            help="Sequence lengths, comma-separated; LO-HI measures a mix of lengths from LO to HI "
            "(what shape buckets are for).",
        ),
    ] = "32",
    buckets: Annotated[
        str | None,
        typer.Option(
            help="shape_buckets sizes to sweep, e.g. none,32/64/128 (none: no buckets; default: "
            "config.yaml's, not swept). Pads axis 1 of the inputs declared with -1 there."
        ),
    ] = None,
    batch_sizes: Annotated[
        str | None,
        typer.Option(
            "--batch-sizes",
            help="dynamic_batching.max_batch_size values; 1 is batching off (default 1,8,16).",
        ),
    ] = None,
    delays_us: Annotated[
        str | None, typer.Option("--delays-us", help="max_queue_delay_us values (default 0,1000).")
    ] = None,
    instances: Annotated[
        str | None, typer.Option("--instances", help="instances values (default 1,2).")
    ] = None,
    threads: Annotated[
        str | None,
        typer.Option("--threads", help="onnxruntime.intra_op_threads values (default 1 and every CPU)."),
    ] = None,
    search: Annotated[
        str, typer.Option("--search", help="brute (every point) or quick (coordinate descent).")
    ] = "brute",
    slo_ms: Annotated[
        float, typer.Option("--slo-ms", help="P90 latency target: a ramp stops past it.")
    ] = 100.0,
    slo_margin: Annotated[
        float,
        typer.Option(
            "--slo-margin",
            help="Capacity is the best step with P90 within this share of --slo-ms, and a ramp stops "
            "past it (1: the SLO itself).",
        ),
    ] = 0.9,
    max_error_rate: Annotated[float, typer.Option(help="Error share that stops a ramp.")] = 0.01,
    step_s: Annotated[
        float,
        typer.Option(
            "--step-s",
            help="Recorded seconds per concurrency step (half for a ramp's low steps, far under the SLO).",
        ),
    ] = 2.0,
    warmup_s: Annotated[float, typer.Option("--warmup-s", help="Unrecorded seconds before each step.")] = 0.5,
    confirm_steps: Annotated[
        float,
        typer.Option(
            "--confirm-steps",
            help="A contender's capacity step is measured again for this many steps' time, and that "
            "window is recorded (0: not measured again).",
        ),
    ] = 1.0,
    final_s: Annotated[
        float,
        typer.Option(
            "--final-s",
            help="After the search at each length, the best configuration's capacity step is measured "
            "once more this many seconds on a fresh server (one concurrency lower too if it comes back "
            "over the bound), and that step is its capacity (0: no final step).",
        ),
    ] = 10.0,
    max_concurrency: Annotated[
        int, typer.Option(help="Top of the concurrency ramp (1, 2, 4, ... this).")
    ] = 64,
    version: Annotated[str | None, typer.Option(help="Model version (default: the highest).")] = None,
    instance_type: Annotated[
        str | None, typer.Option(help="The catalogue instance type this machine stands for (recorded).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write profile.json here instead of beside the version (one model)."),
    ] = None,
    chart: Annotated[
        bool, typer.Option("--chart/--no-chart", help="Draw profile.png beside profile.json.")
    ] = True,
) -> None:
    """Sweep each model's configurations (batch size, queue delay, instances, threads) with a
    closed-loop concurrency ramp per configuration; write profile.json and profile.png beside the
    version. Ctrl-C keeps what was measured."""
    from rich.console import Console

    from modelfleet.tune.errors import TuneInputError
    from modelfleet.tune.machine import nproc
    from modelfleet.tune.profile import ProfileSpec
    from modelfleet.tune.sweep import Space, default_space

    err = Console(stderr=True, soft_wrap=True)
    if search not in ("brute", "quick"):
        raise typer.BadParameter(f"--search must be brute or quick, not '{search}'")
    if out is not None and len(models) > 1:
        raise typer.BadParameter("--out names one file: profile one model at a time with it")
    default = default_space(nproc())
    try:
        space = Space(
            batch_sizes=_ints(batch_sizes, "--batch-sizes") if batch_sizes else default.batch_sizes,
            delays_us=_ints(delays_us, "--delays-us") if delays_us else default.delays_us,
            instances=_ints(instances, "--instances") if instances else default.instances,
            threads=_ints(threads, "--threads") if threads else default.threads,
            buckets=_buckets(buckets) if buckets else (None,),
        )
        lengths, mixed = _lengths(seq_lens)
        spec = ProfileSpec(
            repository=repository,
            seq_lens=lengths,
            mixed=mixed,
            space=space,
            slo=_slo(slo_ms, max_error_rate, slo_margin),
            search=search,
            step_s=step_s,
            warmup_s=warmup_s,
            confirm_steps=confirm_steps,
            final_s=final_s,
            max_concurrency=max_concurrency,
            version=version,
            instance_type=instance_type,
            out=out,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        with _ctrl_c_raises():
            interrupted = _run(spec, models, chart, err)
    except TuneInputError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt where the main thread is, inside the load generator's steps
    too. Under Python's default handler each step's asyncio.Runner puts its own in place, which
    cancels the step's task instead; a cancellation absorbed inside the step then lost the Ctrl-C
    (the profile ran to its end and exited 0: once in six runs of its test). SIGTERM (`timeout`, a
    job runner) stops the same way: under Python's default it killed the process before the
    profile server, started in its own session, was stopped, and that server stayed behind."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(spec: ProfileSpec, models: list[str], chart: bool, err: Console) -> bool:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from modelfleet.tune.machine import this_machine
    from modelfleet.tune.profile import profile_model, resolve_version
    from modelfleet.tune.search import score

    for model in models:  # every name checked before anything is measured
        resolve_version(spec, model)
    err.print(f"machine: {this_machine().line}", style="dim", highlight=False)
    interrupted = False
    for model in models:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as bar:
            task = bar.add_task(model, total=None)
            said = [0]

            def progress(
                text: str,
                done: int,
                total: int,
                task: TaskID = task,
                name: str = model,
                said: list[int] = said,  # configurations last said in a log line
            ) -> None:
                bar.update(task, description=text, completed=done, total=total)
                if done > said[0] and not err.is_terminal:  # no live bar in a log: a line a configuration
                    said[0] = done
                    err.print(f"{name}: {done}/{total} configurations measured and written", highlight=False)

            result, path = profile_model(spec, model, progress)
        best = max(result.measurements, key=lambda m: score(m, spec.slo), default=None)
        err.print(
            f"{model}: {len(result.measurements)} configuration(s) in {result.elapsed_s:g} s -> {path}",
            highlight=False,
        )
        for seq_len in sorted({m.seq_len for m in result.measurements}):
            rows = [m for m in result.measurements if m.seq_len == seq_len]
            top = max(rows, key=lambda m: score(m, spec.slo))
            bound = f"P90 {spec.slo.bound_ms:g} ms"
            if spec.slo.margin < 1:
                bound += f" ({spec.slo.margin:g} x the SLO's {spec.slo.p90_ms:g})"
            err.print(
                f"  sequence {seq_len}: best {top.config}, {score(top, spec.slo):.1f}/s within {bound}",
                highlight=False,
            )
        if chart and best is not None:
            from modelfleet.tune.chart import draw

            png = path.with_suffix(".png")
            draw(result, png)
            err.print(f"  chart: {png}", highlight=False)
        if result.interrupted:
            err.print("interrupted: what was measured is kept", style="yellow")
            interrupted = True
            break
    return interrupted
