"""`modelfleet top`: a live terminal view of a running server (workers, memory, resident models).

Only option parsing lives here; textual and the monitor are imported when the command runs, and need
the `monitor` extra.
"""

from __future__ import annotations

from typing import Annotated

import typer

EXIT_SETUP = 2  # bad options or the monitor extra missing
API_KEY_ENV = "MODELFLEET_TOP_API_KEY"


def top(
    url: Annotated[str, typer.Argument(help="Server base URL (http or https).")] = "http://127.0.0.1:8000",
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    timeout: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds to wait for each answer before calling the server unreachable."),
    ] = 2.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=API_KEY_ENV,
            help=f"Key sent as 'Authorization: Bearer KEY' (better set in {API_KEY_ENV}: "
            "command lines are visible to other users).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Watch a running server live: per-worker CPU and memory, resident models with their size,
    requests/s and queue depth, loads and evictions. Keys: s sort, p pause, q quit."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        typer.echo(f"modelfleet top: the URL must start with http:// or https://, got {url!r}", err=True)
        raise typer.Exit(EXIT_SETUP)
    try:
        from modelfleet.monitor.app import run
    except ImportError as exc:
        typer.echo(
            f"modelfleet top needs the monitor extra ({exc.name} is missing): pip install 'modelfleet[monitor]'",
            err=True,
        )
        raise typer.Exit(EXIT_SETUP) from None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    run(url, interval, timeout, headers)
