"""`modelfleet bench`: closed- or open-loop load against any KServe V2 / Open Inference Protocol server.

Only option parsing lives here; the run itself (numpy, uvloop, rich) is imported when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.bench.spec import API_KEY_ENV, Arrivals, Encoding, Popularity, Protocol

EXIT_ERRORS = 1  # the run saw errors (with --fail-on-error)
EXIT_SETUP = 2  # the run could not start
DEFAULT_CONCURRENCY = 8
DEFAULT_DURATION_S = 10.0


def bench(
    url: Annotated[
        str | None,
        typer.Option(
            help="Server base URL: http://HOST:PORT (default http://127.0.0.1:8000); for --protocol grpc "
            "HOST:PORT or grpc://HOST:PORT (default 127.0.0.1:8001).",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="v2: POST /v2/models/NAME/infer; grpc: V2 gRPC ModelInfer; sagemaker: POST /invocations "
            "with X-Amzn-SageMaker-Target-Model."
        ),
    ] = Protocol.V2,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=API_KEY_ENV,
            help="Sent as 'Authorization: Bearer KEY' (gRPC: the same metadata) with every request.",
            show_default=False,
        ),
    ] = None,
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
    seq_len_max: Annotated[
        int | None,
        typer.Option(
            help="Mixed lengths: each body's other -1 dimensions drawn from --seq-len to this "
            "(with more --bodies, e.g. 32)."
        ),
    ] = None,
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
    users: Annotated[
        list[str] | None,
        typer.Option(
            help="Closed loop with a user ramp, INITIAL:SPAWN_PER_MIN:DURATION, e.g. 2:2:25m (2 users, 2 more "
            "a minute, 25 minutes; Inference Recommender's TrafficPattern phase); repeatable, instead of -c/-d."
        ),
    ] = None,
    stop_p90_ms: Annotated[
        float | None, typer.Option(help="Stop when the P90 of the last --stop-window-s passes this.")
    ] = None,
    stop_p99_ms: Annotated[
        float | None, typer.Option(help="Stop when the P99 of the last --stop-window-s passes this.")
    ] = None,
    stop_error_rate: Annotated[
        float | None,
        typer.Option(help="Stop when the failed share of the last --stop-window-s passes this (0.05: 5 %)."),
    ] = None,
    max_requests: Annotated[
        int | None, typer.Option(help="Stop after this many requests answered or failed.")
    ] = None,
    stop_window_s: Annotated[
        float, typer.Option(help="Seconds of answers the latency and error thresholds look at.")
    ] = 5.0,
    price_per_hour: Annotated[
        float | None,
        typer.Option(
            "--price-per-hour",
            "--cost-per-hour",
            help="$ per hour of the server's machine: the report adds $ per million inferences.",
        ),
    ] = None,
    instance_type: Annotated[
        str | None,
        typer.Option(help="Price the run at this instance type of the planner's catalogue (or --catalog)."),
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(help="Instance catalogue YAML for --instance-type (default: the shipped one)."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a PNG: throughput and latency percentiles over time, phases, latency vs load."
        ),
    ] = None,
    fail_on_error: Annotated[
        bool,
        typer.Option(
            "--fail-on-error/--no-fail-on-error",
            help="Exit with status 1 if any request failed or none succeeded.",
        ),
    ] = True,
) -> None:
    """Drive a V2 inference server (HTTP, gRPC or SageMaker /invocations) with closed-loop (-c, or a
    user ramp --users) or open-loop (--rate, --phase) load and report throughput, latency and the
    cost per million inferences; open-loop latency counts from each request's scheduled time;
    --stop-* thresholds end a closed loop early and say which one did."""
    from datetime import UTC, datetime

    from rich.console import Console

    from modelfleet.bench.report import print_result, report_document, write_report
    from modelfleet.bench.run import run_bench
    from modelfleet.bench.spec import (
        BenchSpec,
        ModelSelection,
        Phase,
        Target,
        Thresholds,
        UserPhase,
        parse_shapes,
        split_names,
    )
    from modelfleet.bench.worker import ClientProcessError
    from modelfleet.bench.workload import SetupError

    console, progress = Console(), Console(stderr=True)
    if concurrency is not None and (rate is not None or phase):
        raise typer.BadParameter("-c is for the closed loop; the open loop's pool is --max-connections")
    if duration is not None and phase:
        raise typer.BadParameter("--duration does not apply with --phase: the phases set the duration")
    if users and (concurrency is not None or duration is not None):
        raise typer.BadParameter("--users sets the users and the duration: leave out -c and -d")
    if url is None:
        url = "127.0.0.1:8001" if protocol is Protocol.GRPC else "http://127.0.0.1:8000"
    usd_per_hour = _price(price_per_hour, instance_type, catalog)
    try:
        spec = BenchSpec(
            target=Target.parse(url, protocol),
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
            seq_len_max=seq_len_max,
            shapes=parse_shapes(shape or []),
            bodies=bodies,
            processes=processes,
            seed=seed,
            top_models=top,
            rate_per_s=rate,
            phases=tuple(Phase.parse(p) for p in phase or []),
            arrivals=arrivals,
            max_connections=max_connections,
            user_phases=tuple(UserPhase.parse(u) for u in users or []),
            thresholds=Thresholds(stop_p90_ms, stop_p99_ms, stop_error_rate, max_requests, stop_window_s),
            api_key=api_key or None,
            usd_per_hour=usd_per_hour,
            instance_type=instance_type,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    started_at = datetime.now(UTC)
    try:
        result = run_bench(spec, log=lambda line: progress.print(line, style="dim", markup=False))
    except (SetupError, ClientProcessError, ValueError, ImportError) as exc:
        progress.print(f"bench cannot run: {exc}", style="red", markup=False)
        raise typer.Exit(EXIT_SETUP) from None

    print_result(console, spec, result)
    if report is not None:
        write_report(report, report_document(spec, result, started_at))
        progress.print(f"report written to {report}", style="dim", markup=False)
    if plot is not None:
        from modelfleet.bench.plot import plot_run

        try:
            plot_run(result, plot, f"modelfleet bench → {spec.target.url}")
        except ImportError as exc:
            progress.print(f"no plot: {exc}", style="red", markup=False)
            raise typer.Exit(EXIT_SETUP) from None
        progress.print(f"plot written to {plot}", style="dim", markup=False)
    if fail_on_error and (result.error_total or not result.requests):
        raise typer.Exit(EXIT_ERRORS)


def _price(price_per_hour: float | None, instance_type: str | None, catalog: Path | None) -> float | None:
    """$ per hour from --price-per-hour, else from --instance-type's catalogue entry."""
    if price_per_hour is not None:
        return price_per_hour
    if instance_type is None:
        if catalog is not None:
            raise typer.BadParameter("--catalog prices --instance-type: name one")
        return None
    from modelfleet.planner.catalog import load_catalog
    from modelfleet.planner.errors import PlanInputError

    try:
        types = load_catalog(catalog).by_name()
    except PlanInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    if instance_type not in types:
        known = ", ".join(sorted(types)[:12])
        raise typer.BadParameter(
            f"instance type '{instance_type}' is not in the catalogue (it has {known}, ...)"
        )
    price = types[instance_type].usd_per_hour
    if price is None:
        raise typer.BadParameter(
            f"instance type '{instance_type}' has no price in the catalogue: give --price-per-hour"
        )
    return price
