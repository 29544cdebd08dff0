"""TensorRT through ONNX Runtime's TensorRT execution provider: the options `modelfleet compile
--target tensorrt` writes into config.yaml (onnxruntime.tensorrt), rendered as the provider's
options (runtimes/providers.py, the server's own rendering), and the engines built at compile
time when asked (--build-engines).

The model stays an fp32 ONNX file: with fp16 asked for, TensorRT picks fp16 kernels when it builds
its engines (trt_fp16_enable), which is how TensorRT is meant to be given precision. Building needs
the provider and an NVIDIA GPU; this module was written and its rendering tested on CPU-only
machines, the build path never run there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.compile.errors import CompileError
from modelfleet.compile.targets import Precision
from modelfleet.repository.config import TensorrtOptions
from modelfleet.runtimes.providers import tensorrt_chain

ENGINE_CACHE = "trt-engines"


def options_for(precision: Precision, workspace_bytes: int) -> TensorrtOptions:
    """Every option set, so that config.yaml shows them all."""
    return TensorrtOptions(
        fp16=precision == Precision.FP16, engine_cache=ENGINE_CACHE, max_workspace_bytes=workspace_bytes
    )


def build_engines(model: Path, options: TensorrtOptions, feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """A TensorRT session of `model`, run once per shape in `feeds` so that its engines are built
    into the cache folder beside it; returned for the gate (which then checks the engines)."""
    import onnxruntime as ort

    (model.parent / options.engine_cache).mkdir(exist_ok=True)
    try:
        session = ort.InferenceSession(
            str(model), providers=tensorrt_chain(options, model.parent), enable_fallback=0
        )
        for batch in feeds:
            session.run(None, batch)
    except Exception as exc:
        raise CompileError(
            f"TensorRT could not build engines: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    return session
