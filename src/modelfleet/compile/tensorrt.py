"""TensorRT through ONNX Runtime's TensorRT execution provider: the options `modelfleet compile
--target tensorrt` writes into config.yaml (onnxruntime.tensorrt), rendered as the provider's
options, and the engines built at compile time when asked (--build-engines).

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
from modelfleet.compile.targets import TENSORRT_PROVIDER, Precision
from modelfleet.repository.config import TensorrtOptions

ENGINE_CACHE = "trt-engines"


def options_for(precision: Precision, workspace_bytes: int) -> TensorrtOptions:
    """Every option set, so that config.yaml shows them all."""
    return TensorrtOptions(
        fp16=precision == Precision.FP16, engine_cache=ENGINE_CACHE, max_workspace_bytes=workspace_bytes
    )


def provider_options(options: TensorrtOptions, version_dir: Path) -> dict[str, str]:
    """The TensorRT provider's options (strings, as ONNX Runtime takes them) for a model whose
    version folder is `version_dir`: the engine and timing caches live in its cache folder."""
    cache = str(version_dir / options.engine_cache)
    return {
        "trt_fp16_enable": str(options.fp16),
        "trt_max_workspace_size": str(options.max_workspace_bytes),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
    }


def providers(options: TensorrtOptions, version_dir: Path) -> list[Any]:
    """TensorRT first; CUDA then the CPU for the operators TensorRT does not take."""
    return [
        (TENSORRT_PROVIDER, provider_options(options, version_dir)),
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def build_engines(model: Path, options: TensorrtOptions, feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """A TensorRT session of `model`, run once per shape in `feeds` so that its engines are built
    into the cache folder beside it; returned for the gate (which then checks the engines)."""
    import onnxruntime as ort

    (model.parent / options.engine_cache).mkdir(exist_ok=True)
    try:
        session = ort.InferenceSession(str(model), providers=providers(options, model.parent))
        for batch in feeds:
            session.run(None, batch)
    except Exception as exc:
        raise CompileError(
            f"TensorRT could not build engines: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    return session
