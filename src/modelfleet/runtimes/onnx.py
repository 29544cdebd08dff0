"""ONNX Runtime adapter: one InferenceSession per loaded model version.

Graph optimisation is on, intra-op threads come from the config or the server default, and the
execution providers follow the model's config (providers.py): TensorRT with its engine cache in the
version folder, CUDA, the CPU.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from modelfleet.errors import BadRequest, InferenceFailed, ModelLoadError, without_paths
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.runtimes.base import LoadSpec
from modelfleet.runtimes.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderChoice,
    check_session,
    execution_providers,
)
from modelfleet.runtimes.providers import providers_for as providers_for  # engine/loading.py reads it

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
OPTIMIZATION_LEVELS = {  # config.yaml onnxruntime.graph_optimization -> ONNX Runtime level
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_SOURCE_LOCATION = re.compile(r"[\w./-]+\.(?:cc|cpp|h|hpp):\d+\s+(?:[^()\n]*?\([^()\n]*\)\s*(?:const\s*)?)?")
_NODE_FAILED = "Non-zero status code returned while running"


def clean_message(message: str) -> str:
    """An ONNX Runtime message fit for a client: no error-code prefix, no C++ source locations,
    no absolute paths (only their last part)."""
    message = _ORT_PREFIX.sub("", message.strip())
    message = _SOURCE_LOCATION.sub("", message)
    return without_paths(message).strip()


__all__ = ["CPU", "CUDA", "OnnxModel", "clean_message", "load", "providers_for"]


class OnnxModel:
    def __init__(
        self, session: ort.InferenceSession, name: str, shared: list[ort.OrtValue] | None = None
    ) -> None:
        self._session = session
        self._shared = shared or []  # ONNX Runtime borrows these buffers: they must outlive the session
        self._name = name
        self.inputs = [_spec(arg) for arg in session.get_inputs()]
        self.outputs = [_spec(arg) for arg in session.get_outputs()]
        self._string_inputs = {t.name for t in self.inputs if t.datatype == "BYTES"}
        self.providers: list[str] = session.get_providers()
        # A CPU session's run does no I/O and takes no lock of ours; its time follows its inputs,
        # which the executor measures: one cheaper than the thread hop may run on the event loop.
        # Not a GPU session (its provider keeps per-thread state best left on the model's thread),
        # nor one reading memory-mapped blobs (a page fault to disk would stall the loop).
        self.may_run_inline = self.providers == [CPU] and not self._shared

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        feeds: Mapping[str, np.ndarray] = inputs
        if self._string_inputs:
            feeds = {k: _as_str(v) if k in self._string_inputs else v for k, v in inputs.items()}
        try:
            result: list[np.ndarray] = self._session.run(outputs, feeds)
        except Exception as exc:
            message = clean_message(str(exc))
            if type(exc).__name__ in ("InvalidArgument", "INVALID_ARGUMENT"):
                raise BadRequest(f"model '{self._name}' refused the input: {message}") from None
            if _NODE_FAILED in str(exc):  # a node could not compute this input (shapes, indices)
                raise BadRequest(f"model '{self._name}' could not run this input: {message}") from None
            raise InferenceFailed(f"model '{self._name}' failed: {message}") from None
        return result

    def unload(self) -> None:
        del self._session
        self._shared.clear()


def load(spec: LoadSpec) -> OnnxModel:
    where = f"{spec.name}/{spec.version}/{spec.path.name}"
    if not spec.path.is_file():
        raise ModelLoadError(f"version {spec.version} has no {spec.path.name}")
    options = spec.config.onnxruntime
    so = ort.SessionOptions()
    so.graph_optimization_level = OPTIMIZATION_LEVELS[options.graph_optimization]
    threads = options.intra_op_threads
    so.intra_op_num_threads = spec.default_intra_op_threads if threads is None else threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4  # fatal only: failures reach clients and the log through exceptions
    shared = []
    for name, array in spec.shared.items():
        value = ort.OrtValue.ortvalue_from_numpy(array)  # no copy: the blob's (memory-mapped) pages
        so.add_initializer(name, value)
        shared.append(value)
    prepacking = options.prepacking if options.prepacking is not None else not shared
    if not prepacking:  # pre-packing makes a private, re-laid-out copy of every weight per session
        so.add_session_config_entry("session.disable_prepacking", "1")
    choice = _providers(spec)
    try:
        # No silent fall-back inside ONNX Runtime (it would retry on the CPU and print to stdout):
        # where a provider asked for fails, the load fails with its reason (providers.py).
        session = ort.InferenceSession(str(spec.path), so, providers=choice.providers, enable_fallback=0)
    except ModelLoadError:
        raise
    except Exception as exc:
        message = (
            str(exc)
            .replace(str(spec.path), where)
            .replace(str(spec.path.parent), f"{spec.name}/{spec.version}")
        )
        message = clean_message(message).removeprefix(f"Load model from {where} failed:").strip()
        raise ModelLoadError(f"ONNX Runtime cannot load {where}: {message[:500]}") from None
    for warning in check_session(choice, session.get_providers(), spec.config.device):
        log.warning("model %s: %s", where, warning)
    return OnnxModel(session, spec.name, shared)


def _providers(spec: LoadSpec) -> ProviderChoice:
    """The model's providers; the TensorRT engine cache folder made inside its version folder."""
    choice = execution_providers(spec.config, spec.path.parent)
    for note in choice.fallbacks:
        log.warning("model %s/%s: %s", spec.name, spec.version, note)
    trt = spec.config.onnxruntime.tensorrt
    if trt is not None and choice.names[0] == TENSORRT:
        cache = spec.path.parent / trt.engine_cache
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelLoadError(
                f"cannot make the TensorRT engine cache {spec.name}/{spec.version}/{trt.engine_cache}: "
                f"{exc.strerror} (the version folder must be writable, or hold the engines already)"
            ) from None
    return choice


def _spec(arg: Any) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{arg.name}' has type {arg.type}, which V2 cannot carry")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _as_str(array: np.ndarray) -> np.ndarray:
    flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.ravel()]
    return np.array(flat, dtype=object).reshape(array.shape)
