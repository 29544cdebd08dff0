"""The `modelfleet` command: one module per subcommand, registered in the table below.

Subcommand modules are light to import; each imports its heavy dependencies (uvicorn, onnxruntime,
torch) inside the command function, so `modelfleet --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

# name -> (module, function); the function's docstring is its help text
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("modelfleet.cli.serve", "serve_command"),
    "demo-repo": ("modelfleet.cli.demo_repo", "demo_repo"),
    "bench": ("modelfleet.cli.bench", "bench"),
    "top": ("modelfleet.cli.top", "top"),
    "plan": ("modelfleet.cli.plan", "plan"),
    "advise": ("modelfleet.cli.plan", "advise"),
    "compile": ("modelfleet.cli.compile", "compile_command"),
    "import": ("modelfleet.cli.import_", "import_command"),
    "profile": ("modelfleet.cli.profile", "profile"),
    "recommend": ("modelfleet.cli.recommend", "recommend"),
    "cluster": ("modelfleet.cli.cluster", "cluster"),
    "deploy": ("modelfleet.cli.deploy", "deploy"),
}


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="modelfleet",
        help="Serve hundreds to thousands of ML models from a few machines.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name, (module, func) in COMMANDS.items():
        app.command(name)(getattr(importlib.import_module(module), func))
    return app


def main() -> None:
    build_app()()
