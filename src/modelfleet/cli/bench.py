"""`modelfleet bench`: closed-loop load against any KServe V2 / Open Inference Protocol server.

Only option parsing lives here; the run itself (numpy, uvloop, rich) is imported when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.bench.spec import Encoding, Popularity

EXIT_ERRORS = 1  # the run saw errors (with --fail-on-error)
EXIT_SETUP = 2  # the run could not start


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
        int, typer.Option("--concurrency", "-c", help="Connections, each with one request in flight.")
    ] = 8,
    duration: Annotated[float, typer.Option("--duration", "-d", help="Recorded seconds.")] = 10.0,
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
    """Drive a V2 inference server with closed-loop load and report throughput and latency."""
    from datetime import UTC, datetime

    from rich.console import Console

    from modelfleet.bench.report import print_result, report_document, write_report
    from modelfleet.bench.run import run_bench
    from modelfleet.bench.spec import BenchSpec, ModelSelection, Target, parse_shapes, split_names
    from modelfleet.bench.worker import ClientProcessError
    from modelfleet.bench.workload import SetupError

    console, progress = Console(), Console(stderr=True)
    try:
        spec = BenchSpec(
            target=Target.parse(url),
            models=ModelSelection(split_names(model or []), model_pattern, model_count, model_start),
            same_signature=same_signature,
            popularity=popularity,
            zipf_s=zipf_s,
            concurrency=concurrency,
            duration_s=duration,
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
