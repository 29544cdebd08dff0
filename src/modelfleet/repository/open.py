"""One entry point from a configured location to a Repository: a folder path or s3://bucket/prefix.

Every other scheme (file://, http://, ...) is refused, so a model source is always one of the
configured roots.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelfleet.repository.config import format_validation_error
from modelfleet.repository.folder import FolderRepository, Repository
from modelfleet.repository.select import SelectedRepository

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def open_repository(location: str, **options: Any) -> Repository:
    """A FolderRepository for a path, an ObjectStoreRepository for s3://; ValueError otherwise.

    `options` are ObjectStoreOptions fields (cache_dir is required) and apply to s3:// only, but
    `selection` (a ModelSelection) limits any repository to the chosen models.
    Nothing is downloaded here and no connection is made.
    """
    selection = options.pop("selection", None)
    repository = _open(location, **options)
    return repository if selection is None else SelectedRepository(repository, selection)


def _open(location: str, **options: Any) -> Repository:
    match = _SCHEME.match(location)
    if match is None:
        if location.lower().startswith("s3:/"):
            raise ValueError(f"'{location[:80]}' is not a folder: did you mean s3://…? (two slashes)")
        if options:
            raise ValueError(f"options {', '.join(sorted(options))} apply to s3:// repositories only")
        return FolderRepository(Path(location))
    scheme = match.group(1).lower()
    if scheme != "s3":
        raise ValueError(
            f"unsupported repository location '{scheme}://…': give a folder path or s3://bucket/prefix"
        )
    from modelfleet.repository.objectstore import ObjectStoreOptions, ObjectStoreRepository

    try:
        parsed = ObjectStoreOptions(**options)
    except ValidationError as exc:
        raise ValueError(f"s3 repository options: {format_validation_error(exc)}") from None
    return ObjectStoreRepository(location, parsed)
