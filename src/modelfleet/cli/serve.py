"""`modelfleet serve`: serve a model repository over the Open Inference Protocol.

Its options are generated from `ServerSettings` (config.py), the one declaration of every setting,
its default and its help: a field `max_queue_wait_s` is `--max-queue-wait-s`, the settings of
s3:// repositories are `--s3-<name>`. Secrets (the admin key) are read from the environment only,
and so are settings no command line needs (lists; SageMaker's own port variable).
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from modelfleet.config import ServerSettings

RENAMED = {"http_port": ("--port", "-p")}  # the README's and every example's name
ENVIRONMENT_ONLY = {"admin_key", "admin_key_sha256", "sagemaker_bind_to_port", "metrics_models"}
NESTED = {"s3": "s3_"}  # nested settings, flattened with a prefix
_SCALARS = (str, int, float, bool, Path)


def serve(repository: str, given: dict[str, Any], nested: dict[str, dict[str, Any]]) -> None:
    """Validate the settings (exit 2 naming the field) and run the server until SIGTERM."""
    from pydantic import ValidationError

    from modelfleet.repository.config import format_validation_error
    from modelfleet.server.app import serve as run
    from modelfleet.server.auth import AuthConfigError

    try:
        base = ServerSettings(repository=repository, **given)
        extra = {name: getattr(base, name).model_dump() | values for name, values in nested.items() if values}
        settings = ServerSettings(**base.model_dump() | extra) if extra else base
    except ValidationError as exc:
        typer.echo(f"modelfleet serve: {format_validation_error(exc)}", err=True)
        raise typer.Exit(2) from None
    try:
        run(settings)
    except AuthConfigError as exc:
        typer.echo(f"modelfleet serve: {exc}", err=True)
        raise typer.Exit(2) from None


def _command() -> Callable[..., None]:
    """The typer command: one option per setting, each None unless given."""
    options: dict[str, tuple[str, str]] = {}  # parameter -> (nested group or "", field name)
    parameters = [
        inspect.Parameter(
            "repository",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                str, typer.Argument(help="Model repository: a folder or s3://bucket/prefix.")
            ],
        )
    ]
    fields = ServerSettings.model_fields
    for name, field in fields.items():
        if name not in ("repository", *ENVIRONMENT_ONLY, *NESTED):
            options[name] = ("", name)
            parameters.append(_option(name, field, _default_of(field)))
    for name, prefix in NESTED.items():  # after the server's own
        nested, default = fields[name].annotation, _default_of(fields[name])
        assert isinstance(nested, type) and issubclass(nested, BaseModel)
        for inner, inner_field in nested.model_fields.items():
            options[prefix + inner] = (name, inner)
            parameters.append(_option(prefix + inner, inner_field, getattr(default, inner)))

    def command(**values: Any) -> None:
        repository = values.pop("repository")
        given: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {group: {} for group in NESTED}
        for parameter, value in values.items():
            if value is None:
                continue
            group, name = options[parameter]
            (nested[group] if group else given)[name] = value.value if isinstance(value, enum.Enum) else value
        serve(repository, given, nested)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = (
        "Serve the models of REPOSITORY over HTTP and gRPC (KServe V2 / Open Inference Protocol).\n\n"
        "Every option can also be set as MODELFLEET_<OPTION> in the environment (s3 options as "
        "MODELFLEET_S3__<NAME>); options win. The admin key for model control is read from "
        "MODELFLEET_ADMIN_KEY (or MODELFLEET_ADMIN_KEY_SHA256) only."
    )
    return command


def _default_of(field: FieldInfo) -> Any:
    return field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]


def _option(name: str, field: FieldInfo, default: Any) -> inspect.Parameter:
    kind = _scalar(field.annotation)
    if kind is None:
        raise TypeError(f"setting '{name}' has no command-line type; list it in ENVIRONMENT_ONLY")
    decls = RENAMED.get(name, ())
    option = typer.Option(*decls, help=_help(field, default))
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def _scalar(annotation: Any) -> type | None:
    """The command-line type of a setting: its scalar or enum type, with None taken out."""
    if typing.get_origin(annotation) is Annotated:
        return _scalar(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar(inner[0]) if len(inner) == 1 else None
    if isinstance(annotation, type) and (issubclass(annotation, enum.Enum) or annotation in _SCALARS):
        return None if issubclass(annotation, SecretStr) else annotation
    return None


def _help(field: FieldInfo, default: Any) -> str:
    """The field's docstring, its first paragraph on one line, and its default."""
    text = " ".join((field.description or "").split("\n\n")[0].split())
    if isinstance(default, enum.Enum):
        default = default.value
    if default is None or default is False or default == "":
        return text
    return f"{text} (default: {default})"  # not [default: ...]: rich reads brackets as markup


serve_command = _command()
