"""`modelfleet bench`: closed- or open-loop load against any KServe V2 / Open Inference Protocol server.

Only option parsing lives here; the run itself (numpy, uvloop, rich) is imported when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.bench.spec import Arrivals, Encoding, Popularity

EXIT_ERRORS = 1  # the run saw errors (with --fail-on-error)
EXIT_SETUP = 2  # the run could not start
DEFAULT_CONCURRENCY = 8
DEFAULT_DURATION_S = 10.0


def bench(
    url: Annotated[str, typer.Option(help="Server base URL (http only).")] = "http://127.0.0.1:8000",
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "--models", "-m", help="Model name; repeat it or separate names with commas."
        ),
    ] = None,
    model_pattern: Annotated[
        str | None,
        typer.Option(help="Model names made by formatting {i}, e.g. 'tenant-{i:04d}' (with --model-count)."),
    ] = None,
    model_count: Annotated[int, typer.Option(help="How many names --model-pattern makes.")] = 0,
    model_start: Annotated[int, typer.Option(help="The first {i} of --model-pattern.")] = 0,
    same_signature: Annotated[
        bool | None,
        typer.Option(
            "--same-signature/--per-model-signature",
            help="Fetch the first model's metadata only and reuse its inputs for all models "
            "(default: on with --model-pattern, off with --model).",
            show_default=False,
        ),
    ] = None,
    popularity: Annotated[Popularity, typer.Option(help="How requests spread over the models.")] = (
        Popularity.UNIFORM
    ),
    zipf_s: Annotated[float, typer.Option(help="Zipf exponent: P(rank k) ∝ 1/k^s.")] = 1.1,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            help=f"Closed loop: connections, each with one request in flight (default: {DEFAULT_CONCURRENCY}).",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Open loop: send R requests/s whatever the server answers (instead of -c)."),
    ] = None,
    phase: Annotated[
        list[str] | None,
        typer.Option(
            help="Open loop in steps, DURATION@RATE, e.g. --phase 10s@100 --phase 10s@400 (instead of "
            "--rate and --duration); repeatable."
        ),
    ] = None,
    arrivals: Annotated[
        Arrivals, typer.Option(help="Open loop: evenly spaced sends, or Poisson arrivals of the same rate.")
    ] = Arrivals.CONSTANT,
    max_connections: Annotated[
        int,
        typer.Option(
            help="Open loop: most connections the pool opens; a request due with none free is counted "
            "as client_saturated, not sent."
        ),
    ] = 512,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            "-d",
            help=f"Recorded seconds (default: {DEFAULT_DURATION_S:g}).",
            show_default=False,
        ),
    ] = None,
    warmup: Annotated[float, typer.Option(help="Unrecorded seconds of load before the record starts.")] = 2.0,
    timeout: Annotated[float, typer.Option(help="Seconds before an unanswered request is a timeout.")] = 30.0,
    encoding: Annotated[
        Encoding, typer.Option(help="V2 JSON tensors, or the binary tensor extension (binary outputs too).")
    ] = Encoding.JSON,
    input_file: Annotated[
        Path | None,
        typer.Option(help="A V2 JSON request body for every model, instead of random inputs from metadata."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Size of a leading -1 (batch) dimension.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Size of every other -1 dimension.")] = 16,
    shape: Annotated[
        list[str] | None, typer.Option(help="Full shape of one input, NAME=D1,D2,...; repeatable.")
    ] = None,
    bodies: Annotated[int, typer.Option(help="Distinct pre-built random bodies per input signature.")] = 4,
    processes: Annotated[
        int, typer.Option("--processes", "-p", help="Client processes sharing the connections.")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed for inputs and model choice.")] = 0,
    top: Annotated[int, typer.Option(help="Rows in the per-model breakdown.")] = 10,
    report: Annotated[
        Path | None, typer.Option(help="Write every figure and the options as JSON here.")
    ] = None,
    fail_on_error: Annotated[
        bool,
        typer.Option(
            "--fail-on-error/--no-fail-on-error",
            help="Exit with status 1 if any request failed or none succeeded.",
        ),
    ] = True,
) -> None:
    """Drive a V2 inference server with closed-loop (-c) or open-loop (--rate, --phase) load and
    report throughput and latency; open-loop latency counts from each request's scheduled time."""
    from datetime import UTC, datetime

    from rich.console import Console

    from modelfleet.bench.report import print_result, report_document, write_report
    from modelfleet.bench.run import run_bench
    from modelfleet.bench.spec import BenchSpec, ModelSelection, Phase, Target, parse_shapes, split_names
    from modelfleet.bench.worker import ClientProcessError
    from modelfleet.bench.workload import SetupError

    console, progress = Console(), Console(stderr=True)
    if concurrency is not None and (rate is not None or phase):
        raise typer.BadParameter("-c is for the closed loop; the open loop's pool is --max-connections")
    if duration is not None and phase:
        raise typer.BadParameter("--duration does not apply with --phase: the phases set the duration")
    try:
        spec = BenchSpec(
            target=Target.parse(url),
            models=ModelSelection(split_names(model or []), model_pattern, model_count, model_start),
            same_signature=same_signature,
            popularity=popularity,
            zipf_s=zipf_s,
            concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency,
            duration_s=DEFAULT_DURATION_S if duration is None else duration,
            warmup_s=warmup,
            timeout_s=timeout,
            encoding=encoding,
            input_file=input_file,
            batch_size=batch_size,
            seq_len=seq_len,
            shapes=parse_shapes(shape or []),
            bodies=bodies,
            processes=processes,
            seed=seed,
            top_models=top,
            rate_per_s=rate,
            phases=tuple(Phase.parse(p) for p in phase or []),
            arrivals=arrivals,
            max_connections=max_connections,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    started_at = datetime.now(UTC)
    try:
        result = run_bench(spec, log=lambda line: progress.print(line, style="dim", markup=False))
    except (SetupError, ClientProcessError, ValueError) as exc:
        progress.print(f"bench cannot run: {exc}", style="red", markup=False)
        raise typer.Exit(EXIT_SETUP) from None

    print_result(console, spec, result)
    if report is not None:
        write_report(report, report_document(spec, result, started_at))
        progress.print(f"report written to {report}", style="dim", markup=False)
    if fail_on_error and (result.error_total or not result.requests):
        raise typer.Exit(EXIT_ERRORS)
