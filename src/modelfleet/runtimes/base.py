"""The small protocol every framework adapter implements, and the table that finds them.

Lifecycle: `load_runtime(spec)` (blocking, in a loader thread) -> `infer(...)` any number of times
from one executor thread per instance -> `unload()`. Framework imports stay inside the adapters.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from modelfleet.errors import ModelLoadError
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import ModelConfig


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What a runtime needs to load one version of one model."""

    name: str
    version: int
    path: Path  # the model file
    config: ModelConfig  # as written; the runtime's signature completes it
    default_intra_op_threads: int  # server default when the config sets none (0: framework's choice)
    shared: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Tensors from the repository's blob store (weights.json), by name: shared with other models,
    read-only, to be used in place (never copied per model)."""


class Runtime(Protocol):
    """A loaded model version. `infer` is blocking and runs on the model's executor thread."""

    inputs: list[TensorSpec]  # as the model declares them, -1 for dynamic dimensions
    outputs: list[TensorSpec]
    may_run_inline: bool
    """True only when a call does no I/O (no page faults on memory-mapped files either), waits on
    nothing and takes a time set by its inputs: the executor may then run calls measured as cheaper
    than the thread hop on the event loop, where the model's config or the server opts in
    (engine/executor/model.py, "Inline execution"). User code (python models) never does."""

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run once; return the named outputs in the order asked."""
        ...

    def unload(self) -> None:
        """Release the model's memory; no call follows."""
        ...


# backend name -> "module:function" taking a LoadSpec and returning a Runtime
BACKENDS: dict[str, str] = {
    "onnxruntime": "modelfleet.runtimes.onnx:load",
    "python": "modelfleet.runtimes.python:load",
    "torchscript": "modelfleet.runtimes.torchscript:load",
}


def load_runtime(spec: LoadSpec) -> Runtime:
    backend = spec.config.backend or ""
    target = BACKENDS.get(backend)
    if target is None:
        raise ModelLoadError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"backend '{backend}' is not installed ({exc.name} missing)") from None
    loader: Callable[[LoadSpec], Runtime] = getattr(module, func_name)
    return loader(spec)
