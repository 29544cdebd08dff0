"""A repository seen through a model selection: one server of a fleet serves only its share.

`--models 'tenant-00*,ranker'` (or `@FILE`, one name or pattern per line) hides every other model;
the bases and ensemble steps that the chosen models use stay reachable, so they load as usual.
"""

from __future__ import annotations

import threading

from modelfleet.config import ModelSelection
from modelfleet.errors import ModelfleetError, model_not_found
from modelfleet.repository.config import ModelConfig
from modelfleet.repository.folder import ModelSource, Repository


def dependencies(config: ModelConfig) -> list[str]:
    """The models a model reads from: an adapter's base, an ensemble's steps."""
    found = [config.base] if config.base is not None else []
    return found + [step.model for step in config.steps or ()]


class SelectedRepository:
    """The Repository protocol over another, limited to the selected models and what they use."""

    def __init__(self, inner: Repository, selection: ModelSelection) -> None:
        self._inner = inner
        self._selection = selection
        self._served: frozenset[str] | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self._inner.describe()} ({self._selection.describe()})"

    def list_models(self) -> list[str]:
        """The selected models present in the repository, with the models they use (re-read on
        every call, so a rescan sees new matches)."""
        names = self._inner.list_models()
        present = set(names)
        served = {name for name in names if self._selection.matches(name)}
        todo = list(served)
        while todo:
            try:
                used = dependencies(self._inner.config(todo.pop()))
            except ModelfleetError:
                continue  # its load will say what is wrong
            for name in used:
                if name in present and name not in served:
                    served.add(name)
                    todo.append(name)
        with self._lock:
            self._served = frozenset(served)
        return [name for name in names if name in served]

    def fetch(self, name: str) -> ModelSource:
        self._check(name)
        return self._inner.fetch(name)

    def config(self, name: str) -> ModelConfig:
        self._check(name)
        return self._inner.config(name)

    def _check(self, name: str) -> None:
        with self._lock:
            served = self._served
        if served is None:
            self.list_models()
            with self._lock:
                served = self._served
        assert served is not None
        if name not in served and not self._selection.matches(name):
            raise model_not_found(name)
