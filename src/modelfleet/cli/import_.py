"""`modelfleet import SRC_DIR... --repo REPO`: fine-tuned checkpoints -> shared blobs and adapters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def import_command(
    sources: Annotated[
        list[Path], typer.Argument(metavar="SRC_DIR...", help="Hugging Face folders, one per fine-tune.")
    ],
    repo: Annotated[Path, typer.Option("--repo", help="The model repository to write into.")],
    base_name: Annotated[
        str | None, typer.Option("--base-name", help="The shared base model's name (default: FIRST-base).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import fine-tuned checkpoints of one architecture into REPO, each identical tensor stored once.

    Each SRC_DIR (config.json + model.safetensors) becomes the model named after its folder. When the
    checkpoints differ from the first only in their classification head, the first one's encoder is
    written once as the base model and every checkpoint becomes an adapter (its head) over it; a
    checkpoint that differs elsewhere is written whole, its weights in the blob store. Prints the
    bytes saved against the checkpoints' own size.
    """
    from modelfleet.compile.errors import CompileError

    try:
        from modelfleet.compile.importer import import_checkpoints

        report = import_checkpoints(sources, repo, base_name, log=typer.echo)
    except CompileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    mib = 1 << 20
    typer.echo(
        f"imported {report.checkpoints} checkpoint(s) in {report.seconds:.1f} s: {len(report.adapters)} adapter(s)"
        f"{f' over {report.base}' if report.base else ''}, {len(report.full_copies)} full copies; "
        f"{report.source_bytes / mib:.1f} MiB of checkpoints stored in {report.written_bytes / mib:.1f} MiB "
        f"({report.saved_bytes / mib:.1f} MiB saved)"
    )
