"""Model and version names, checked before they touch a path, and paths kept inside their root."""

from __future__ import annotations

import re
from pathlib import Path

from modelfleet.config import MODEL_NAME as _NAME
from modelfleet.config import is_model_name as is_model_name  # re-exported
from modelfleet.errors import BadRequest, ModelLoadError

_VERSION = re.compile(r"[0-9]{1,18}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_model_name(name: str) -> str:
    """The name itself, or 400: letters, digits and `._-`, at most 128 characters, no `..`."""
    if not _NAME.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 64 and name.isprintable() else repr(name[:64])
        raise BadRequest(
            f"invalid model name '{shown}': use letters, digits, '.', '_' and '-' "
            "(at most 128 characters, starting with a letter or digit, no '..')"
        )
    return name


def check_version(version: str) -> str:
    """A version is a non-negative integer written in decimal; 400 otherwise."""
    if not _VERSION.fullmatch(version):
        shown = version if len(version) <= 32 and version.isprintable() else repr(version[:32])
        raise BadRequest(
            f"invalid model version '{shown}': versions are non-negative integers or aliases "
            "(lower-case letters, digits, '_' and '-', starting with a letter)"
        )
    return str(int(version))


def is_alias(text: str) -> bool:
    """A version alias such as 'stable' or 'canary' (never all digits)."""
    return bool(_ALIAS.fullmatch(text))


def inside(root: Path, *parts: str) -> Path:
    """root/parts resolved, refusing any result that leaves root (after following links).

    Callers have checked the names already; what is refused here is a link pointing out of the
    repository, which makes the model unavailable rather than the request bad.
    """
    real_root = root.resolve()
    path = real_root.joinpath(*parts).resolve()
    if path != real_root and real_root not in path.parents:
        raise ModelLoadError(f"'{'/'.join(parts)}' leads outside the model repository")
    return path
