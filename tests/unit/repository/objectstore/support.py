"""Helpers shared by the object-store tests."""

from pathlib import Path

from modelfleet.repository.objectstore import ObjectStoreOptions


def options(tmp_path: Path, **values: object) -> ObjectStoreOptions:
    return ObjectStoreOptions.model_validate({"cache_dir": tmp_path, **values})
