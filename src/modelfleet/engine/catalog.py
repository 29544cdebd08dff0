"""The records of the repository's models and the request path's lookup, shared by the in-process
`ModelManager` and the workers' `Fleet`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Generic

from modelfleet.engine.records import M, ModelRecord
from modelfleet.errors import model_not_found
from modelfleet.repository.names import check_model_name, check_version


class Catalog(Generic[M]):
    """One record per model name of the repository, and the ready copy a request goes to."""

    def __init__(self) -> None:
        self.records: dict[str, ModelRecord[M]] = {}
        self._random = random.Random()

    def find(self, name: str, version: str | None) -> M | None:
        """The ready copy a request goes to, or None when it must be loaded first.

        400 for a bad name or version, 404 for a model the repository does not have, one unloaded
        on request or a version not served."""
        record = self.records.get(name)
        if record is None:
            check_model_name(name)
            if version is not None:
                check_version(version)
            raise model_not_found(name, version)
        if version is not None and not version.isdigit() and not record.versions and not record.held:
            return None  # an alias: the model's config says which version once it has loaded
        model = record.pick(version, self._random.random() if record.traffic else 0.0)
        if model is not None:
            return model
        if record.held or (version is not None and not record.servable(version)):
            raise record.not_ready(version)
        return None

    def get(self, name: str) -> ModelRecord[M] | None:
        return self.records.get(name)

    def add(self, name: str) -> ModelRecord[M]:
        """The model's record, made if it has none (a model of the repository, or one to load)."""
        record = self.records.get(name)
        if record is None:
            record = self.records[name] = ModelRecord(name)
        return record

    def existing(self, name: str) -> ModelRecord[M]:
        """The record of a model named by a control call: 400 for a bad name, 404 for none."""
        check_model_name(name)
        record = self.records.get(name)
        if record is None:
            raise model_not_found(name)
        return record

    def hold(self, name: str) -> ModelRecord[M]:
        """The start of an unload on request: the model is not loaded on demand until loaded again."""
        record = self.existing(name)
        record.held = True
        return record

    def sync(self, names: Iterable[str]) -> None:
        """Records for the repository's models now; those of removed models go once nothing is
        ready, loading or waiting on them."""
        present = set(names)
        for name in present:
            self.add(name)
        for name, record in list(self.records.items()):
            if (
                name not in present
                and not record.ready
                and not record.lock.locked()
                and record.loading is None
            ):
                del self.records[name]

    def served_versions(self, name: str) -> list[str]:
        record = self.records.get(name)
        return [str(v) for v in sorted(record.ready)] if record else []

    def loaded(self, name: str | None = None, where: Callable[[str], bool] | None = None) -> list[M]:
        """Ready copies, of one model or of all (sorted by name and version), of the models `where` keeps."""
        names = sorted(self.records) if name is None else [name] if name in self.records else []
        return [
            record.ready[v]
            for record in (self.records[n] for n in names)
            if where is None or where(record.name)
            for v in sorted(record.ready)
        ]
