"""`compile_model`: one source -> one checked, profiled model folder in the repository.

    inspect source -> open it (models.py) -> reference outputs on the gate's inputs
      -> ONNX: export (TorchScript-based; dynamo for torch.export programs)
               -> [int8: quantise | cuda fp16: convert] -> offline graph optimisation (CPU: the
                  extended level less the fusions that were slower here; config.yaml: load at basic)
         TorchScript: cast -> trace -> freeze -> save (signature inside)
      -> gate (the saved file, reloaded, against the reference) -> profile -> write the model folder
    scikit-learn / XGBoost / LightGBM sources take their own short path (classic_flow.py).

All files are made in a scratch folder; the model folder is staged and renamed into the repository
only once the gate has passed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from modelfleet.compile import gate as gates
from modelfleet.compile import onnx_steps, samples
from modelfleet.compile.errors import CompileError, Unsupported
from modelfleet.compile.finish import gate_line, reject, write_model
from modelfleet.compile.models import TOKEN_INPUTS, Model, open_model
from modelfleet.compile.profile import best_batch, profile
from modelfleet.compile.report import CompileReport, host_info
from modelfleet.compile.request import CompileRequest
from modelfleet.compile.source import Source, SourceKind, inspect_source
from modelfleet.compile.targets import (
    Format,
    Precision,
    Target,
    check_available,
    check_supported,
    cpu_description,
    has_fast_bf16,
    resolve_format,
)
from modelfleet.compile.writer import split_out
from modelfleet.repository.config import (
    Device,
    DynamicBatching,
    ModelConfig,
    OnnxRuntimeOptions,
    ShapeBuckets,
    TensorConfig,
)

__all__ = ["TOKEN_INPUTS", "CompileRequest", "compile_model"]
REQUEST_MAX_BATCH = 64
Log = Callable[[str], None]
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def compile_model(request: CompileRequest, log: Log = print) -> CompileReport:
    started = time.monotonic()
    source = inspect_source(request.source, request.trust_pickle)
    if source.kind.classic:
        from modelfleet.compile.classic_flow import compile_classic

        return compile_classic(request, source, log, started)
    fmt = resolve_format(request.target, request.precision, request.format)
    check_supported(request.target, request.precision, fmt)
    check_available(request.target, request.build_engines)
    _, name = split_out(request.out)
    seq_lens = sorted(set(request.seq_lens))
    batch_sizes = sorted(set(request.batch_sizes))
    _check(request, source, fmt, seq_lens, batch_sizes)
    steps: dict[str, float] = {}
    mark = time.monotonic()
    model = open_model(source, request.task)
    steps["load_s"] = round(time.monotonic() - mark, 2)
    if model.max_positions and seq_lens[-1] > model.max_positions:
        raise CompileError(
            f"--seq-lens {seq_lens[-1]} is longer than the model's {model.max_positions} positions"
        )
    report = CompileReport(
        str(request.source), source.kind, model.task, request.target, request.precision, fmt,
        seq_lens, batch_sizes, host_info(cpu_description()), steps,
    )  # fmt: skip
    report.notes = _notes(request)
    for note in report.notes:
        log(f"note: {note}")
    batches = (
        samples.from_file(request.calibration, seq_lens, model.tokenizer)
        if request.calibration is not None
        else samples.generated(seq_lens, model.vocab_size, model.tokenizer)
    )
    batches = [samples.Batch(b.seq_len, _feeds(b.feeds, model.inputs)) for b in batches]
    try:
        expected = [model.reference(b.feeds) for b in batches]  # before any cast of the torch module
    except Exception as exc:
        raise CompileError(
            f"the source model fails on the gate's inputs: {type(exc).__name__}: {exc}"
        ) from None

    with _quiet(source), tempfile.TemporaryDirectory(prefix="modelfleet-compile-") as scratch:
        work = Path(scratch)
        if fmt == Format.ONNX:
            calibration = [_padded(b.feeds, seq_lens[-1]) for b in batches] if request.static_int8 else None
            files, compiled = _onnx(source, model, request, batches, work, steps, log, calibration)
        else:
            files, compiled = _torchscript(model, request, batches[-1].feeds, work, steps, log, report)
        mark = time.monotonic()
        classifier = model.task == "classification"
        report.gate = gates.run_gate(_replay(expected), compiled, batches, classifier, request.thresholds)
        steps["gate_s"] = round(time.monotonic() - mark, 2)
        log(gate_line(report))
        if request.profile_s > 0:
            mark = time.monotonic()
            report.profile = profile(
                lambda feeds: compiled(_feeds(feeds, model.inputs)), seq_lens, batch_sizes,
                model.vocab_size, request.profile_s,
            )  # fmt: skip
            steps["profile_s"] = round(time.monotonic() - mark, 2)
        report.files = {f.name: _size(f) for f in files}
        if not report.gate.passed:
            reject(report, request, started)
        config = _config(model, request, fmt, seq_lens, report)
        write_model(files, config, report, request, started)
    if request.report is not None:
        report.write(request.report)
    log(f"{name}: version {report.written_to} written in {steps['total_s']:.1f} s")
    return report


def _check(
    request: CompileRequest, source: Source, fmt: Format, seq_lens: list[int], batch_sizes: list[int]
) -> None:
    """Combinations refused before any work, each saying why."""
    if not seq_lens or seq_lens[0] < 1 or not batch_sizes or batch_sizes[0] < 1:
        raise CompileError("--seq-lens and --batch-sizes need positive numbers")
    if request.target == Target.NEURON and len(seq_lens) > 1:
        raise Unsupported("target neuron compiles fixed shapes: give one --seq-lens value per compile")
    if request.static_int8 and (request.precision != Precision.INT8 or fmt != Format.ONNX):
        raise Unsupported("--static-int8 applies to --precision int8 in ONNX")
    if source.kind == SourceKind.ONNX and fmt != Format.ONNX:
        raise Unsupported("an ONNX source compiles to ONNX only (use --format onnx)")
    if source.kind == SourceKind.TORCHSCRIPT and request.precision in (Precision.BF16, Precision.FP16):
        # a frozen module keeps its weights as constants that .to() does not reach: no pretending
        raise Unsupported(
            f"a TorchScript source compiles at fp32 or int8; for {request.precision}, compile the Hugging Face folder"
        )


def _notes(request: CompileRequest) -> list[str]:
    """What the report must say about where this compile was checked."""
    notes = []
    if request.precision == Precision.BF16 and request.target == Target.CPU and not has_fast_bf16():
        notes.append("this CPU has neither AVX-512 BF16 nor AMX: bf16 runs emulated, slower than fp32")
    if request.target == Target.CUDA or (request.target == Target.TENSORRT and not request.build_engines):
        notes.append(
            f"gate and profile ran on this machine's CPU; the model was not run on a GPU by {request.target}"
        )
    if request.target == Target.CUDA and request.precision == Precision.FP16:
        notes.append(
            "fp16 weights and activations (inputs and outputs kept FP32); ONNX Runtime's CPU provider ran "
            "the gate, falling back to fp32 kernels where it has no fp16 one"
        )
    if request.target == Target.TENSORRT and not request.build_engines:
        notes.append(
            "TensorRT engines are built on the first load on the GPU, into the cache folder named in "
            "config.yaml; the gate checked the ONNX model"
            + (", not TensorRT's fp16 kernels" if request.precision == Precision.FP16 else "")
        )
    return notes


def _quiet(source: Source) -> AbstractContextManager[None]:
    """transformers logs advice while models are traced; the report says what was done."""
    if source.kind != SourceKind.HUGGING_FACE:
        return nullcontext()
    from modelfleet.compile.hf import quiet_transformers

    return quiet_transformers()


def _onnx(
    source: Source, model: Model, request: CompileRequest, batches: list[samples.Batch], work: Path,
    steps: dict[str, float], log: Log, calibration: list[dict[str, np.ndarray]] | None = None,
) -> tuple[list[Path], Runner]:  # fmt: skip
    import onnxruntime as ort

    precision, target = request.precision, request.target
    example = batches[-1].feeds
    mark = time.monotonic()
    if source.kind == SourceKind.ONNX:
        raw = source.path
    else:
        raw = work / "exported.onnx"
        if model.program is not None:
            onnx_steps.export_program(model.program, example, model.inputs, model.output, raw)
        else:
            onnx_steps.export(model.torch_module, example, model.inputs, model.output, raw)
        steps["export_s"] = round(time.monotonic() - mark, 2)
        log(f"exported to ONNX in {steps['export_s']:.1f} s")
    mark = time.monotonic()
    if precision == Precision.INT8:
        quantized = work / "quantized.onnx"
        if calibration is not None:
            onnx_steps.quantize_int8_static(raw, quantized, calibration)
        else:
            onnx_steps.quantize_int8(raw, quantized)
        raw = quantized
        steps["quantize_s"] = round(time.monotonic() - mark, 2)
        log(f"quantised to int8 in {steps['quantize_s']:.1f} s")
    elif precision == Precision.FP16 and target == Target.CUDA:  # TensorRT casts when it builds engines
        halved = work / "fp16.onnx"
        onnx_steps.convert_fp16(raw, halved)
        raw = halved
        steps["fp16_s"] = round(time.monotonic() - mark, 2)
        log(f"converted to fp16 in {steps['fp16_s']:.1f} s")
    mark = time.monotonic()
    out_dir = work / "out"
    out_dir.mkdir()
    final = out_dir / "model.onnx"
    onnx_steps.optimize(raw, final, cpu=target == Target.CPU)
    steps["optimize_s"] = round(time.monotonic() - mark, 2)
    if request.build_engines:
        from modelfleet.compile import tensorrt

        mark = time.monotonic()
        options = tensorrt.options_for(precision, request.trt_workspace_bytes)
        session = tensorrt.build_engines(final, options, [b.feeds for b in batches])
        steps["engines_s"] = round(time.monotonic() - mark, 2)
        log(f"TensorRT engines built in {steps['engines_s']:.1f} s")
    else:  # gated and profiled as the server will load it (for the CPU: config.yaml's level)
        from modelfleet.runtimes.onnx import OPTIMIZATION_LEVELS

        options = ort.SessionOptions()
        if target == Target.CPU:
            options.graph_optimization_level = OPTIMIZATION_LEVELS[onnx_steps.CPU_SERVED_LEVEL]
        session = ort.InferenceSession(str(final), options, providers=["CPUExecutionProvider"])

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result: np.ndarray = session.run([model.output], feeds)[0]
        return result

    return sorted(out_dir.iterdir()), run


def _torchscript(
    model: Model, request: CompileRequest, example: dict[str, np.ndarray], work: Path,
    steps: dict[str, float], log: Log, report: CompileReport,
) -> tuple[list[Path], Runner]:  # fmt: skip
    import torch

    from modelfleet.compile import torchscript_steps
    from modelfleet.runtimes.torchscript import SIGNATURE_FILE

    assert isinstance(model.torch_module, torch.nn.Module)
    mark = time.monotonic()
    neuron = request.target == Target.NEURON
    if neuron:
        from modelfleet.compile import neuron as neuron_steps

        report.neuron_placement = neuron_steps.placement(model.torch_module, example, model.inputs)
        log(neuron_steps.placement_line(report.neuron_placement))
    traced = torchscript_steps.trace(
        model.torch_module, request.precision, example, model.inputs, neuron=neuron
    )
    out_dir = work / "out"
    out_dir.mkdir()
    final = out_dir / "model.pt"
    inputs, outputs = _signature(model)
    torchscript_steps.save(traced, final, inputs, outputs, request.target)
    steps["trace_s"] = round(time.monotonic() - mark, 2)
    log(f"traced to TorchScript ({request.precision}) in {steps['trace_s']:.1f} s")
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        loaded = torch.jit.load(str(final), map_location="cpu", _extra_files={SIGNATURE_FILE: ""})  # type: ignore[no-untyped-call]
    return [final], torchscript_steps.runner(loaded.eval(), model.inputs)


def _signature(model: Model) -> tuple[list[TensorConfig], list[TensorConfig]]:
    inputs = [TensorConfig(name=n, datatype="INT64", shape=[-1, -1]) for n in model.inputs]
    outputs = [TensorConfig(name=model.output, datatype="FP32", shape=[-1, model.width])]
    return inputs, outputs


def _config(
    model: Model, request: CompileRequest, fmt: Format, seq_lens: list[int], report: CompileReport
) -> ModelConfig:
    """The model's config.yaml: its signature, shape buckets and the batch size that profiled best."""
    inputs, outputs = _signature(model)
    batch = best_batch(report.profile) if report.profile else 16
    fields: dict[str, object] = {
        "backend": "onnxruntime" if fmt == Format.ONNX else "torchscript",
        "max_batch_size": REQUEST_MAX_BATCH,
        "inputs": inputs,
        "outputs": outputs,
        "dynamic_batching": DynamicBatching(max_batch_size=batch),
        "shape_buckets": ShapeBuckets(axis=1, sizes=seq_lens, pad={n: 0.0 for n in model.inputs}),
    }
    if request.target in (Target.CUDA, Target.TENSORRT):
        fields["device"] = Device.CUDA  # gated and profiled on this machine's CPU: see the report's notes
    if request.target == Target.NEURON:
        fields["device"] = Device.NEURON  # placed on workers holding NeuronCores
    if request.target == Target.CPU and fmt == Format.ONNX:  # the graph is optimised already
        fields["onnxruntime"] = OnnxRuntimeOptions(graph_optimization=onnx_steps.CPU_SERVED_LEVEL)
    if request.target == Target.TENSORRT:
        from modelfleet.compile import tensorrt

        fields["onnxruntime"] = OnnxRuntimeOptions(
            tensorrt=tensorrt.options_for(request.precision, request.trt_workspace_bytes)
        )
    return ModelConfig.model_validate(fields)


def _feeds(feeds: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's inputs from token ids and mask: token_type_ids zeros when it takes them."""
    out = {n: feeds[n] for n in names if n in feeds}
    if "token_type_ids" in names:
        out["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    return out


def _padded(feeds: dict[str, np.ndarray], seq: int) -> dict[str, np.ndarray]:
    """Zero-padded to `seq` tokens (masked out): the calibrator wants one shape for every batch."""
    return {n: np.pad(a, ((0, 0), (0, seq - a.shape[1]))) for n, a in feeds.items()}


def _replay(expected: list[np.ndarray]) -> Runner:
    """The reference outputs computed up front, handed back in the order the gate asks for them."""
    pending = iter(expected)
    return lambda _feeds: next(pending)


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (a TensorRT engine cache)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
