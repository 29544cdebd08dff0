"""Building one loaded model version in a loader thread: runtime, shared weights, warm-up, footprint."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelfleet.engine.blobs import BlobCache
from modelfleet.engine.memory import process_rss, release_free_memory
from modelfleet.errors import ModelfleetError, ModelLoadError
from modelfleet.protocol.datatypes import DATATYPES
from modelfleet.protocol.rest import Limits, decode_request
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import ModelConfig, complete_config
from modelfleet.repository.folder import ModelSource
from modelfleet.runtimes import adapter
from modelfleet.runtimes.base import LoadSpec, Runtime, load_runtime

WARMUP_DIM = 8  # size given to variable non-batch dimensions of generated warm-up inputs
_SESSION_LOCK = threading.Lock()  # one framework session created at a time: footprints stay exact
_UNLOAD_WAIT_S = 30.0
# An ONNX model with one Identity node, x FP32 [1, 1] -> y (built with onnx.helper, opset 17).
_TINY_ONNX = base64.b64decode(
    "CAg6PwoQCgF4EgF5IghJZGVudGl0eRIBZ1oTCgF4Eg4KDAgBEggKAggBCgIIAWITCgF5Eg4KDAgBEggKAggBCgIIAUIECgAQEQ=="
)


@dataclass(frozen=True, slots=True)
class Built:
    runtime: Runtime
    config: ModelConfig  # completed from the runtime's signature
    nbytes: int  # measured resident bytes, shared blobs excluded
    load_s: float
    gpu: bool = False  # runs on a GPU (device defaults differ: batching sizes)


def shared_tensors(source: ModelSource, version: int, blobs: BlobCache) -> dict[str, np.ndarray]:
    """The version's weights.json tensors, opened once per process in the blob cache."""
    manifest = source.weights.get(version)
    if manifest is None:
        return {}
    return {name: blobs.open(source.blobs[ref.blob], ref) for name, ref in manifest.tensors.items()}


def on_gpu(config: ModelConfig) -> bool:
    """Whether the model's runtime will run on a GPU (ONNX Runtime with CUDA present and allowed)."""
    if config.backend != "onnxruntime":
        return False
    from modelfleet.runtimes.onnx import CUDA, providers_for

    return providers_for(config.device)[0] == CUDA


def build(
    source: ModelSource,
    version: int,
    shared: Mapping[str, np.ndarray],
    default_threads: int,
    default_max_batch_size: int,
) -> Built:
    """Load a model with its own runtime (not an adapter), warm it up, and measure it."""
    gpu = on_gpu(source.config)
    spec = LoadSpec(source.name, version, source.model_file(version), source.config, default_threads, shared)
    started = time.perf_counter()
    with _SESSION_LOCK:
        before = process_rss().anonymous
        runtime = load_runtime(spec)
        try:
            config = complete_config(spec.config, runtime.inputs, runtime.outputs, default_max_batch_size)
            warm_up(runtime, config, source.model_file(version).parent.parent)
        except BaseException:
            runtime.unload()
            release_free_memory()
            raise
        nbytes = process_rss().anonymous - before
    return Built(runtime, config, max(nbytes, 0), time.perf_counter() - started, gpu)


def unload(runtime: Runtime) -> None:
    """Release a runtime and return the memory, never while another load is being measured
    (unless that load hangs: after a while the unload goes ahead anyway)."""
    if isinstance(runtime, adapter.Head):  # a few kilobytes: nothing to measure or trim
        runtime.unload()
        return
    locked = _SESSION_LOCK.acquire(timeout=_UNLOAD_WAIT_S)
    try:
        runtime.unload()
        release_free_memory()
    finally:
        if locked:
            _SESSION_LOCK.release()


def initialize_runtime() -> None:
    """Create and drop one tiny session, so that ONNX Runtime's one-time process state is not
    counted in the footprint of the first model loaded."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    with _SESSION_LOCK:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(_TINY_ONNX, options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros((1, 1), np.float32)})
        del session
        release_free_memory()


def build_adapter(
    source: ModelSource, version: int, shared: Mapping[str, np.ndarray], base_config: ModelConfig
) -> Built:
    """An adapter's head, checked against its (loaded) base model's signature."""
    assert base_config.inputs is not None and base_config.outputs is not None
    started = time.perf_counter()
    spec = LoadSpec(source.name, version, source.model_file(version), source.config, 0, shared)
    head = adapter.load(spec, [t.spec() for t in base_config.inputs], [t.spec() for t in base_config.outputs])
    config = complete_config(
        source.config.model_copy(update={"max_batch_size": base_config.max_batch_size}),
        head.inputs,
        head.outputs,
        base_config.max_batch_size or 0,
    )
    return Built(head, config, head.nbytes, time.perf_counter() - started)  # the base is warm already


def warm_up(runtime: Runtime, config: ModelConfig, model_dir: Path, default_runs: int = 1) -> None:
    """Run the configured warm-up inferences; a failing one fails the load with its reason."""
    runs = config.warmup.runs if config.warmup.runs is not None else default_runs
    if runs == 0:
        return
    assert config.inputs is not None and config.outputs is not None
    feeds = (
        _sample_feeds(model_dir / config.warmup.sample)
        if config.warmup.sample
        else {t.name: _generated(t.spec(), config.max_batch_size or 0) for t in config.inputs}
    )
    outputs = [t.name for t in config.outputs]
    for _ in range(runs):
        try:
            runtime.infer(feeds, outputs)
        except ModelfleetError as exc:
            raise ModelLoadError(f"warm-up failed: {exc.message}") from None


def _generated(spec: TensorSpec, max_batch_size: int) -> np.ndarray:
    shape = [
        1 if (i == 0 and max_batch_size) else (WARMUP_DIM if d == -1 else d) for i, d in enumerate(spec.shape)
    ]
    dt = DATATYPES[spec.datatype]
    if dt.is_bytes:
        return np.full(shape, b"", dtype=object)
    fill = 1 if "mask" in spec.name.lower() else 0
    return np.full(shape, fill, dtype=dt.dtype)


def _sample_feeds(path: Path) -> dict[str, np.ndarray]:
    try:
        body = path.read_bytes()
        request = decode_request(body, None, Limits())
    except OSError:
        raise ModelLoadError(f"warm-up sample {path.name} cannot be read") from None
    except ModelfleetError as exc:
        raise ModelLoadError(f"warm-up sample {path.name}: {exc.message}") from None
    except json.JSONDecodeError:
        raise ModelLoadError(f"warm-up sample {path.name} is not JSON") from None
    return {t.name: t.data for t in request.inputs}
