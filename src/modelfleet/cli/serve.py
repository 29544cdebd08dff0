"""`modelfleet serve`: serve a model repository over the Open Inference Protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def serve(
    repository: Annotated[str, typer.Argument(help="Model repository: a folder or s3://bucket/prefix.")],
    host: Annotated[str | None, typer.Option(help="Bind address (default: 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="HTTP port (default: 8000; 8080 with --sagemaker).")
    ] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port, 0 for none (default: 8001).")] = None,
    intra_op_threads: Annotated[
        int | None,
        typer.Option(help="Intra-op threads per model where its config sets none (0: framework's)."),
    ] = None,
    startup_load: Annotated[
        str | None, typer.Option(help="Models loaded at start: pinned | all | none (default: pinned).")
    ] = None,
    memory_budget: Annotated[
        str | None,
        typer.Option(help="Memory for resident models: 12GiB, 800MB, or a fraction of the machine's: 0.6."),
    ] = None,
    repository_poll_s: Annotated[
        float | None, typer.Option(help="Look for added and removed models every N seconds (0: never).")
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option(help="Largest request body (default: 64 MiB).")
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option(help="Worker processes: N, or auto (one per GPU, else per two cores); 0: in process."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug | info | warning | error.")] = None,
    max_queue_wait_s: Annotated[
        float | None,
        typer.Option(help="429 when a model's queued work would take longer than this (default: 1)."),
    ] = None,
    request_timeout_s: Annotated[
        float | None,
        typer.Option(help="504 for a request not answered within this; 0: no limit (default: 60)."),
    ] = None,
    inline_max_us: Annotated[
        float | None,
        typer.Option(
            help="Opt in: run cheap models on the event loop up to N µs a loop turn (default: 0, never)."
        ),
    ] = None,
    shutdown_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="On SIGTERM, seconds in-flight calls (HTTP and gRPC) may take; then 503 / UNAVAILABLE "
            "(default: 25; keep it under terminationGracePeriodSeconds)."
        ),
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="text (for people) | json (one object a line) (default: text).")
    ] = None,
    metrics_top_k: Annotated[
        int | None,
        typer.Option(help="/metrics: models with their own label, by recent traffic (default: 50)."),
    ] = None,
    python_models: Annotated[
        bool | None, typer.Option("--python-models", help="Allow backend: python models (they run code).")
    ] = None,
    sagemaker: Annotated[
        bool | None,
        typer.Option("--sagemaker", help="Also serve SageMaker's contract: /ping, /invocations, /models."),
    ] = None,
    sagemaker_default_model: Annotated[
        str | None, typer.Option(help="SageMaker: the model /invocations runs without a target-model header.")
    ] = None,
    auth_keys_file: Annotated[
        Path | None,
        typer.Option(help="Tenants' key digests and models (YAML/JSON); unset: inference is open."),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint for s3:// repositories (MinIO, Ceph).")
    ] = None,
    s3_cache_dir: Annotated[Path | None, typer.Option(help="Local cache of s3:// models.")] = None,
    s3_cache_max_bytes: Annotated[int | None, typer.Option(help="Size limit of that cache.")] = None,
) -> None:
    """Serve the models of REPOSITORY over HTTP and gRPC (KServe V2 / Open Inference Protocol).

    Every option can also be set as MODELFLEET_<OPTION> in the environment; options win. The admin
    key for model control is read from MODELFLEET_ADMIN_KEY only.
    """
    from pydantic import ValidationError

    from modelfleet.config import ServerSettings
    from modelfleet.repository.config import format_validation_error
    from modelfleet.server.app import serve as run
    from modelfleet.server.auth import AuthConfigError

    given: dict[str, Any] = {
        "repository": repository,
        "host": host,
        "http_port": port,
        "grpc_port": grpc_port,
        "intra_op_threads": intra_op_threads,
        "startup_load": startup_load,
        "memory_budget": memory_budget,
        "repository_poll_s": repository_poll_s,
        "max_body_bytes": max_body_bytes,
        "workers": workers,
        "log_level": log_level,
        "max_queue_wait_s": max_queue_wait_s,
        "request_timeout_s": request_timeout_s,
        "inline_max_us": inline_max_us,
        "shutdown_timeout_s": shutdown_timeout_s,
        "log_format": log_format,
        "metrics_top_k": metrics_top_k,
        "python_models": python_models,
        "sagemaker": sagemaker,
        "sagemaker_default_model": sagemaker_default_model,
        "auth_keys_file": auth_keys_file,
    }
    s3 = {"endpoint_url": s3_endpoint_url, "cache_dir": s3_cache_dir, "cache_max_bytes": s3_cache_max_bytes}
    try:
        base = ServerSettings(**{k: v for k, v in given.items() if v is not None})
        s3_given = {k: v for k, v in s3.items() if v is not None}
        settings = (
            ServerSettings(**base.model_dump() | {"s3": base.s3.model_dump() | s3_given})
            if s3_given
            else base
        )
    except ValidationError as exc:
        typer.echo(f"modelfleet serve: {format_validation_error(exc)}", err=True)
        raise typer.Exit(2) from None
    try:
        run(settings)
    except AuthConfigError as exc:
        typer.echo(f"modelfleet serve: {exc}", err=True)
        raise typer.Exit(2) from None
