"""`modelfleet cluster up|down|status PLAN_DIR`: run a planner's plan on this machine behind nginx.
Option parsing and printing only; modelfleet.cluster does the work."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_INPUT = 2  # bad input or a failed start: nothing left running


class Action(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    STATUS = "status"


def cluster(
    action: Annotated[Action, typer.Argument(help="up: start the plan's servers and the nginx front; "
                                             "down: stop them; status: how they are.")],
    plan_dir: Annotated[Path, typer.Argument(help="The folder `modelfleet plan FLEET --out DIR` wrote (plan.yaml); "
                                             "the cluster's state, logs and nginx files go in DIR/cluster.")],
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="up: the front's port.")] = None,
    repo: Annotated[Path, typer.Option("--repo", help="up: the model repository (a folder).")] = Path("demo-repo"),
    scale: Annotated[float | None, typer.Option("--scale", help="up: each instance's memory and vCPUs times this "
                                                "(default: the most, up to 1, that fits 60 % of this machine's memory and its cores).")] = None,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="up: the instance catalogue the plan was made "
                                                 "with (default: the shipped one).")] = None,
    host: Annotated[str, typer.Option("--host", help="up: the address the front and servers bind to.")] = "127.0.0.1",
    nginx: Annotated[str | None, typer.Option("--nginx", help="up: the nginx binary (default: on PATH or /usr/sbin).")] = None,
    pin: Annotated[bool, typer.Option("--pin", help="up: run each server on CPUs of its own (its instance's "
                                      "scaled vCPUs, taken in turn from this machine's; shared round them when there are too few).")] = False,
    server_arg: Annotated[list[str] | None, typer.Option("--server-arg", help="up: one more `modelfleet serve` "
                                                         "option for every server, e.g. --server-arg=--compute-slots=1 (repeat it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="status: one JSON document.")] = False,
) -> None:  # fmt: skip
    """Run a fleet plan on this machine: one `modelfleet serve` per planned instance, each serving only
    its models, behind a local nginx rendered from the Kubernetes router's template; `down` stops every
    process `up` started, by pid."""
    from rich.console import Console

    from modelfleet.cluster import run
    from modelfleet.cluster.layout import ClusterError

    err = Console(stderr=True, highlight=False)
    try:
        if action is Action.UP:
            if port is None:
                raise ClusterError("cluster up needs --port, the front's port")
            options = run.UpOptions(
                port=port, repository=repo, scale=scale, catalog=catalog, host=host, nginx=nginx,
                pin=pin, server_args=tuple(server_arg or ()),
            )  # fmt: skip
            state = run.up(plan_dir, options, say=lambda text: err.print(text))
            err.print(f"cluster up: {len(state.servers)} servers behind http://{state.host}:{state.port} "
                      f"(scale {state.scale:.3g}); `modelfleet cluster down {plan_dir}` stops them")  # fmt: skip
        elif action is Action.DOWN:
            stopped = run.down(plan_dir)
            err.print(
                f"cluster down: stopped {len(stopped)} process(es)" if stopped else "no cluster was running"
            )
        else:
            doc = run.status(plan_dir)
            if as_json:
                print(json.dumps(doc))
            elif doc is None:
                err.print(f"no cluster is running from {plan_dir}")
            else:
                _print_status(doc)
    except ClusterError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_INPUT) from None


def _print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    front = doc["front"]
    table = Table(
        title=f"front {front['url']} (nginx pid {front['pid']}: {_word(front['running'], 'running')})"
    )
    columns = ("server", "type", "pid", "port", "health", "models", "loaded", "budget", "threads", "cpus")
    for column in columns:
        table.add_column(column, justify="right" if column not in ("server", "type", "health") else "left")
    for s in doc["servers"]:
        health = "ready" if s["ready"] else "running, not ready" if s["running"] else "[red]gone[/red]"
        table.add_row(
            s["name"], s["instance_type"], str(s["pid"]), str(s["port"]), health, f"{s['models']:,}",
            "-" if s["loaded"] is None else f"{s['loaded']:,}", f"{s['memory_budget_bytes'] / 2**30:.2f} GiB",
            str(s["threads"]), ",".join(map(str, s.get("cpus") or [])) or "any",
        )  # fmt: skip
    Console().print(table)


def _word(flag: bool, word: str) -> str:
    return word if flag else f"[red]not {word}[/red]"
