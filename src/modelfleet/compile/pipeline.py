"""`compile_model`: one source -> one checked, profiled model folder in the repository.

    inspect source -> (Hugging Face) load for the task -> reference outputs on the gate's inputs
      -> ONNX: export -> [int8: quantise] -> offline graph optimisation
         TorchScript: cast -> trace -> freeze -> save (signature inside)
      -> gate (the saved file, reloaded, against the reference) -> profile -> write the model folder

All files are made in a scratch folder; the model folder is staged and renamed into the repository
only once the gate has passed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from modelfleet.compile import gate as gates
from modelfleet.compile import onnx_steps, samples
from modelfleet.compile.errors import CompileError, GateFailed, Unsupported
from modelfleet.compile.profile import best_batch, profile
from modelfleet.compile.report import REPORT_FILE, CompileReport, host_info
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
from modelfleet.compile.writer import config_text, split_out, staged_model
from modelfleet.repository.config import (
    CONFIG_FILENAME,
    Device,
    DynamicBatching,
    ModelConfig,
    ShapeBuckets,
    TensorConfig,
)

DEFAULT_SEQ_LENS = (32, 64, 128)
DEFAULT_BATCH_SIZES = (1, 8, 16)
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
REQUEST_MAX_BATCH = 64
Log = Callable[[str], None]
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class CompileRequest:
    source: Path
    out: Path  # REPO/NAME
    target: Target = Target.CPU
    precision: Precision = Precision.FP32
    format: Format | None = None
    task: str | None = None  # embedding | classification; from config.json when None
    seq_lens: Sequence[int] = DEFAULT_SEQ_LENS
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
    calibration: Path | None = None
    thresholds: gates.Thresholds = field(default_factory=gates.Thresholds)
    trust_pickle: bool = False
    profile_s: float = 0.5  # per (bucket, batch) cell; 0 skips the profile
    version: int | None = None
    report: Path | None = None  # also write the report here
    static_int8: bool = False  # int8 with activation ranges calibrated on the gate's inputs (QDQ)


@dataclass
class _Model:
    """What the steps need to know about the source, whatever its kind."""

    inputs: list[str]
    output: str
    width: int
    vocab_size: int
    task: str
    reference: Runner  # the source model, fp32
    torch_module: object | None = None  # Hugging Face sources only
    tokenizer: Path | None = None
    max_positions: int = 0  # 0: unknown


def compile_model(request: CompileRequest, log: Log = print) -> CompileReport:
    started = time.monotonic()
    fmt = resolve_format(request.target, request.precision, request.format)
    check_supported(request.target, request.precision, fmt)
    check_available(request.target)
    repo, name = split_out(request.out)
    seq_lens = sorted(set(request.seq_lens))
    batch_sizes = sorted(set(request.batch_sizes))
    if not seq_lens or seq_lens[0] < 1 or not batch_sizes or batch_sizes[0] < 1:
        raise CompileError("--seq-lens and --batch-sizes need positive numbers")
    if request.target == Target.NEURON and len(seq_lens) > 1:
        raise Unsupported("target neuron compiles fixed shapes: give one --seq-lens value per compile")
    source = inspect_source(request.source, request.trust_pickle)
    if request.static_int8 and (request.precision != Precision.INT8 or fmt != Format.ONNX):
        raise Unsupported("--static-int8 applies to --precision int8 in ONNX")
    if source.kind == SourceKind.ONNX and fmt != Format.ONNX:
        raise Unsupported("an ONNX source compiles to ONNX only (use --format onnx)")
    if source.kind == SourceKind.TORCHSCRIPT and request.precision in (Precision.BF16, Precision.FP16):
        # a frozen module keeps its weights as constants that .to() does not reach: no pretending
        raise Unsupported(
            f"a TorchScript source compiles at fp32 or int8; for {request.precision}, compile the Hugging Face folder"
        )
    steps: dict[str, float] = {}
    mark = time.monotonic()
    model = _open_model(source, request.task)
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
            files, compiled = _onnx(source, model, request, batches[-1].feeds, work, steps, log, calibration)
        else:
            files, compiled = _torchscript(model, request, batches[-1].feeds, work, steps, log)
        mark = time.monotonic()
        classifier = model.task == "classification"
        report.gate = gates.run_gate(_replay(expected), compiled, batches, classifier, request.thresholds)
        steps["gate_s"] = round(time.monotonic() - mark, 2)
        log(_gate_line(report))
        if request.profile_s > 0:
            mark = time.monotonic()
            report.profile = profile(
                lambda feeds: compiled(_feeds(feeds, model.inputs)), seq_lens, batch_sizes,
                model.vocab_size, request.profile_s,
            )  # fmt: skip
            steps["profile_s"] = round(time.monotonic() - mark, 2)
        report.files = {f.name: f.stat().st_size for f in files}
        if not report.gate.passed:
            _reject(report, request, repo / f".{name}.compile-rejected.json", started)
        config = _config(model, request, fmt, seq_lens, report)
        _write(files, config, report, request, started)
    if request.report is not None:
        report.write(request.report)
    log(f"{name}: version {report.written_to} written in {steps['total_s']:.1f} s")
    return report


def _notes(request: CompileRequest) -> list[str]:
    """What the report must say about where this compile was checked."""
    notes = []
    if request.precision == Precision.BF16 and request.target == Target.CPU and not has_fast_bf16():
        notes.append("this CPU has neither AVX-512 BF16 nor AMX: bf16 runs emulated, slower than fp32")
    if request.target in (Target.CUDA, Target.TENSORRT):
        notes.append(
            f"gate and profile ran on this machine's CPU; the model was not run on a GPU by {request.target}"
        )
    if request.target == Target.NEURON:
        notes.append(
            "operators placed on Neuron: not recorded (torch_neuronx reports it in its compiler log)"
        )
    return notes


def _reject(report: CompileReport, request: CompileRequest, default: Path, started: float) -> NoReturn:
    """Keep the report (nothing else) and raise GateFailed."""
    assert report.gate is not None
    report.status = "rejected"
    report.steps_s["total_s"] = round(time.monotonic() - started, 2)
    kept = request.report or default
    kept.parent.mkdir(parents=True, exist_ok=True)
    report.write(kept)
    raise GateFailed(
        f"accuracy gate refused the {request.precision} model: {'; '.join(report.gate.failures)}; "
        f"nothing was written to the repository; report kept at {kept}"
    )


def _write(
    files: list[Path], config: ModelConfig, report: CompileReport, request: CompileRequest, started: float
) -> None:
    """The model folder (or its new version), staged and renamed into the repository."""
    repo, name = split_out(request.out)
    with staged_model(repo, name, request.version) as staged:
        for file in files:
            shutil.move(file, staged.version_dir / file.name)
        report.status = "accepted"
        report.written_to = str(repo / name / str(staged.version))
        report.steps_s["total_s"] = round(time.monotonic() - started, 2)
        report.write(staged.version_dir / REPORT_FILE)
        header = f"Written by `modelfleet compile` from {request.source.name} ({request.precision}, {report.format})."
        (staged.folder / CONFIG_FILENAME).write_text(config_text(config, header), encoding="utf-8")


def _quiet(source: Source) -> AbstractContextManager[None]:
    """transformers logs advice while models are traced; the report says what was done."""
    if source.kind != SourceKind.HUGGING_FACE:
        return nullcontext()
    from modelfleet.compile.hf import quiet_transformers

    return quiet_transformers()


def _open_model(source: Source, task: str | None) -> _Model:
    if source.kind == SourceKind.ONNX:
        return _open_onnx(source.path, task)
    if source.kind == SourceKind.TORCHSCRIPT:
        return _open_torchscript(source.path, task)
    from modelfleet.compile import hf

    chosen = hf.Task(task) if task is not None else hf.default_task(source.config)
    loaded = hf.load_task_model(source, chosen)
    module = loaded.module
    import torch

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[n]) for n in hf.INPUT_NAMES))
        result: np.ndarray = out.float().numpy()
        return result

    return _Model(
        inputs=list(hf.INPUT_NAMES),
        output=loaded.output,
        width=loaded.width,
        vocab_size=loaded.vocab_size,
        task=chosen,
        reference=reference,
        torch_module=module,
        tokenizer=source.tokenizer,
        max_positions=loaded.max_positions,
    )


def _open_onnx(path: Path, task: str | None) -> _Model:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # failures reach the user through the exception
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompileError(f"ONNX Runtime cannot load {path.name}: {str(exc)[:300]}") from None
    names = [i.name for i in session.get_inputs()]
    if "input_ids" not in names or not set(names) <= set(TOKEN_INPUTS):
        raise Unsupported(
            f"{path.name} takes {names}: ONNX sources are compiled when they take token ids "
            f"({', '.join(TOKEN_INPUTS)}); other signatures are not supported yet"
        )
    outputs = session.get_outputs()
    width = outputs[0].shape[-1] if outputs[0].shape and isinstance(outputs[0].shape[-1], int) else -1
    first = outputs[0].name

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result: np.ndarray = session.run([first], feeds)[0]
        return result

    task = task or ("classification" if first == "logits" else "embedding")
    return _Model(names, first, width, _onnx_vocab_size(path), task, reference)


def _open_torchscript(path: Path, task: str | None) -> _Model:
    """A TorchScript module taking (input_ids, attention_mask) and returning one tensor
    [batch, width]: its width is read from one run; the vocabulary from its embedding table."""
    import warnings

    import torch

    from modelfleet.compile import torchscript_steps

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
            module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise CompileError(f"torch cannot load {path.name}: {str(exc).strip()[:300]}") from None
    tables = [p for name, p in module.named_parameters() if "embed" in name and p.dim() == 2]
    vocab = int(tables[0].shape[0]) if tables else 100
    run = torchscript_steps.runner(module, ["input_ids", "attention_mask"])
    probe = np.ones((1, 8), np.int64)
    try:
        out = run({"input_ids": probe, "attention_mask": probe})
    except Exception as exc:
        raise Unsupported(
            f"{path.name} does not take (input_ids, attention_mask) [batch, seq] and answer one tensor: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}"
        ) from None
    if not isinstance(out, np.ndarray) or out.ndim != 2:
        raise Unsupported(
            f"{path.name} answers {getattr(out, 'shape', type(out))}, not one [batch, width] tensor"
        )
    task = task or "embedding"
    output = "logits" if task == "classification" else "embedding"

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result: np.ndarray = np.asarray(run(feeds), dtype=np.float32)
        return result

    return _Model(["input_ids", "attention_mask"], output, int(out.shape[1]), vocab, task, reference, module)


def _onnx_vocab_size(path: Path) -> int:
    """Rows of the embedding table that input_ids index (a Gather of an initializer), else 100:
    generated ids stay below it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == "input_ids":
            table = tables.get(node.input[0])
            if table is not None and table.dims:
                return int(table.dims[0])
    return 100


def _onnx(
    source: Source, model: _Model, request: CompileRequest, example: dict[str, np.ndarray], work: Path,
    steps: dict[str, float], log: Log, calibration: list[dict[str, np.ndarray]] | None = None,
) -> tuple[list[Path], Runner]:  # fmt: skip
    import onnxruntime as ort

    precision, target = request.precision, request.target
    mark = time.monotonic()
    if source.kind == SourceKind.ONNX:
        raw = source.path
    else:
        raw = work / "exported.onnx"
        onnx_steps.export(model.torch_module, example, model.inputs, model.output, raw)
        steps["export_s"] = round(time.monotonic() - mark, 2)
        log(f"exported to ONNX in {steps['export_s']:.1f} s")
    if precision == Precision.INT8:
        mark = time.monotonic()
        quantized = work / "quantized.onnx"
        if calibration is not None:
            onnx_steps.quantize_int8_static(raw, quantized, calibration)
        else:
            onnx_steps.quantize_int8(raw, quantized)
        raw = quantized
        steps["quantize_s"] = round(time.monotonic() - mark, 2)
        log(f"quantised to int8 in {steps['quantize_s']:.1f} s")
    mark = time.monotonic()
    out_dir = work / "out"
    out_dir.mkdir()
    final = out_dir / "model.onnx"
    onnx_steps.optimize(raw, final, cpu=target == Target.CPU)
    steps["optimize_s"] = round(time.monotonic() - mark, 2)
    session = ort.InferenceSession(str(final), providers=["CPUExecutionProvider"])

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result: np.ndarray = session.run([model.output], feeds)[0]
        return result

    return sorted(out_dir.iterdir()), run


def _torchscript(
    model: _Model, request: CompileRequest, example: dict[str, np.ndarray], work: Path,
    steps: dict[str, float], log: Log,
) -> tuple[list[Path], Runner]:  # fmt: skip
    import torch

    from modelfleet.compile import torchscript_steps
    from modelfleet.runtimes.torchscript import SIGNATURE_FILE

    assert isinstance(model.torch_module, torch.nn.Module)
    mark = time.monotonic()
    traced = torchscript_steps.trace(
        model.torch_module, request.precision, example, model.inputs, neuron=request.target == Target.NEURON
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


def _signature(model: _Model) -> tuple[list[TensorConfig], list[TensorConfig]]:
    inputs = [TensorConfig(name=n, datatype="INT64", shape=[-1, -1]) for n in model.inputs]
    outputs = [TensorConfig(name=model.output, datatype="FP32", shape=[-1, model.width])]
    return inputs, outputs


def _config(
    model: _Model, request: CompileRequest, fmt: Format, seq_lens: list[int], report: CompileReport
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


def _gate_line(report: CompileReport) -> str:
    g = report.gate
    assert g is not None
    agreement = f", top-1 agreement {g.top1_agreement:.1%}" if g.top1_agreement is not None else ""
    verdict = "passed" if g.passed else "FAILED: " + "; ".join(g.failures)
    return (
        f"accuracy gate on {g.samples} samples: cosine {g.cosine_mean:.5f} (min {g.cosine_min:.5f}), "
        f"max |diff| {g.max_abs_diff:.3g}{agreement}: {verdict}"
    )
