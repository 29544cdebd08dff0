"""The ONNX steps of a compile: export from PyTorch, offline graph optimisation, int8 quantisation.

Each step reads one file and writes another, so that a failure names its step and the folder
being built never holds a half-made model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np

from modelfleet.compile.errors import CompileError

OPSET = 17
_EXTERNAL_MIN_BYTES = 1 << 30  # larger models keep their weights beside model.onnx (protobuf's 2 GiB cap)
WEIGHTS_FILE = "model.weights"


def export(
    module: Any, example: dict[str, np.ndarray], input_names: Sequence[str], output: str, path: Path
) -> None:
    """`module` (eval mode) traced on `example` by the TorchScript-based exporter, batch and
    sequence axes dynamic."""
    import torch

    args = tuple(torch.from_numpy(example[name]) for name in input_names)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "seq"} for name in input_names}
    axes[output] = {0: "batch"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            ignore_export_warnings()
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=[output],
                dynamic_axes=axes,
            )
    except Exception as exc:
        raise CompileError(
            f"the ONNX exporter cannot handle this model: {type(exc).__name__}: {exc}"
        ) from None


def export_program(
    program: Any, example: dict[str, np.ndarray], input_names: Sequence[str], output: str, path: Path
) -> None:
    """A torch.export program through the dynamo exporter (its dynamic dimensions kept), the one
    output renamed to `output`."""
    import onnx
    import torch

    args = tuple(torch.from_numpy(example[name]) for name in input_names)
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_dynamo():
            warnings.simplefilter("ignore")  # pytree deprecations inside the exporter
            exported = torch.onnx.export(
                program, args, None, dynamo=True, input_names=list(input_names), verbose=False
            )
    except Exception as exc:
        raise CompileError(
            f"the ONNX exporter (dynamo) cannot handle this program: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    if exported is None:
        raise CompileError("the ONNX exporter (dynamo) returned no program")
    model = exported.model_proto
    if len(model.graph.output) != 1:
        raise CompileError(f"the program answers {len(model.graph.output)} tensors; one is supported")
    rename_value(model.graph, model.graph.output[0].name, output)
    onnx.save(model, str(path))


def rename_value(graph: Any, old: str, new: str) -> None:
    """Rename a value of the graph everywhere; an inner value already called `new` (the dynamo
    exporter names values after operators, e.g. 'embedding') is renamed out of the way first."""
    if old == new:
        return
    taken = {v for node in graph.node for v in node.output} | {i.name for i in graph.initializer}
    if new in taken:
        _replace(graph, new, f"{new}__inner")
    _replace(graph, old, new)


def _replace(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if v == old else v for v in node.input]
        node.output[:] = [new if v == old else v for v in node.output]
    for value in [*graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new


def convert_fp16(source: Path, target: Path) -> None:
    """Weights and activations in fp16 (ONNX Runtime's float16 tool, maintained with it), the
    model's inputs and outputs kept in their types so that the served signature does not change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # values clamped to the fp16 range are reported one by one
            halved = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(halved, str(target))
    except Exception as exc:
        raise CompileError(f"fp16 conversion failed: {type(exc).__name__}: {str(exc)[:300]}") from None


@contextmanager
def _quiet_dynamo() -> Iterator[None]:
    """The dynamo exporter logs each optional operator library it does not find (torchvision)."""
    logger = logging.getLogger("torch.onnx")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def ignore_export_warnings() -> None:
    """Warnings tracing a transformer always gives; the accuracy gate covers their risks."""
    # the TorchScript-based exporter and tracer are chosen on purpose: they handle these models today
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
    # Python booleans from shapes in transformers' mask code: constant for encoders without a cache
    warnings.filterwarnings("ignore", "Converting a tensor to a Python", Warning)
    warnings.filterwarnings("ignore", "Exporting aten::index operator of advanced indexing", UserWarning)
    # a TorchScript source has no Python signature; its inputs are given by position
    warnings.filterwarnings("ignore", "no signature found for", UserWarning)
    warnings.filterwarnings("ignore", category=torch_tracer_warning())


def torch_tracer_warning() -> type[Warning]:
    import torch

    category: type[Warning] = torch.jit.TracerWarning  # type: ignore[attr-defined]
    return category


# Left out of the CPU graph: ONNX Runtime's SkipLayerNormalization kernel (residual Add + LayerNorm
# in one) took 4-5x the time of the Add and LayerNormalization it replaces on MiniLM's shapes (ORT
# 1.32, 2-core Xeon, 1 or 2 threads); in the int8 graph, where MatMulIntegerToFloat takes the bias
# and the fusion matches, it was a quarter of the run (docs/benchmarks.md, issue 14, third pass).
CPU_FUSIONS_LEFT_OUT = ("SkipLayerNormFusion",)
CPU_SERVED_LEVEL: Final = "basic"
"""The level config.yaml asks for when the server loads a CPU compile: its file holds the extended
level's graph already, and loading at the extended level again would make the fusions left out."""


def optimize(source: Path, target: Path, cpu: bool = True) -> None:
    """ONNX Runtime's graph optimisations saved to `target`: for the CPU the extended level (fusions
    that hold on any CPU) less CPU_FUSIONS_LEFT_OUT, the file then loaded at CPU_SERVED_LEVEL; for a
    GPU target only the basic level, as fusions are chosen per execution provider at load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if cpu else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    if source.stat().st_size >= _EXTERNAL_MIN_BYTES:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", WEIGHTS_FILE
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    try:
        ort.InferenceSession(
            str(source),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(CPU_FUSIONS_LEFT_OUT) if cpu else None,
        )
    except Exception as exc:
        raise CompileError(f"ONNX Runtime cannot load the model to optimise it: {exc}") from None


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8: weights of every MatMul with a constant weight quantised per output channel
    (int8), activations quantised at run time. MatMuls between two activations (attention scores)
    and embedding lookups stay fp32: measured on MiniLM, they cost accuracy and give little speed."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet_quantizer():
            quantize_dynamic(
                source,
                target,
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                use_external_data_format=source.stat().st_size >= _EXTERNAL_MIN_BYTES,
                # DefaultTensorType: outputs of contrib operators (an ONNX source already optimised
                # by ONNX Runtime) have no inferred type; they are float in these graphs
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as exc:
        raise CompileError(f"int8 quantisation failed: {type(exc).__name__}: {exc}") from None


def quantize_int8_static(source: Path, target: Path, calibration: Sequence[dict[str, np.ndarray]]) -> None:
    """Static int8 (QDQ): activation ranges measured on the calibration batches (min-max, uint8
    asymmetric: the best of the calibrators tried on MiniLM, which the gate still refuses at cosine
    0.94), weights int8 per channel; MatMuls with a constant weight only, as for the dynamic variant."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    try:
        with _quiet_quantizer():
            quantize_static(
                source,
                target,
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                use_external_data_format=source.stat().st_size >= _EXTERNAL_MIN_BYTES,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"MatMulConstBOnly": True},
            )
    except Exception as exc:
        raise CompileError(f"static int8 quantisation failed: {type(exc).__name__}: {exc}") from None


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantiser logs advice to the root logger on every call; the report says what was done."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
