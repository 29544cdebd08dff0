"""`modelfleet import SRC_DIR... --repo REPO`: fine-tuned checkpoints -> shared blobs and adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def import_command(
    sources: Annotated[list[Path], typer.Argument(metavar="SRC_DIR...", help="Hugging Face folders.")],
    repo: Annotated[Path, typer.Option("--repo", help="The model repository to write into.")],
) -> None:
    """Import fine-tuned checkpoints of one architecture into REPO."""
    typer.echo("error: not implemented yet", err=True)
    raise typer.Exit(2)
