"""The compile of a scikit-learn / XGBoost / LightGBM source: convert (classic.py), gate against
the library's own predictions, profile per batch size, write the model folder with its signature.

These models have no sequence axis, no shape buckets and one precision: fp32 ONNX for the CPU
(their tree and linear operators, the ai.onnx.ml domain, run on ONNX Runtime's CPU provider).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from modelfleet.compile import classic
from modelfleet.compile.errors import Unsupported
from modelfleet.compile.finish import gate_line, reject, write_model
from modelfleet.compile.profile import best_batch, profile_rows
from modelfleet.compile.report import CompileReport, host_info
from modelfleet.compile.request import CompileRequest
from modelfleet.compile.source import Source
from modelfleet.compile.targets import Format, Precision, Target, cpu_description
from modelfleet.repository.config import ModelConfig

REQUEST_MAX_BATCH = 1024  # rows of a few numbers each: larger batches than a transformer's


def compile_classic(
    request: CompileRequest, source: Source, log: Callable[[str], None], started: float
) -> CompileReport:
    fmt = request.format or Format.ONNX
    if request.target != Target.CPU or request.precision != Precision.FP32 or fmt != Format.ONNX:
        raise Unsupported(
            f"a {source.kind} model compiles to fp32 ONNX for target cpu (its ai.onnx.ml operators run on "
            f"ONNX Runtime's CPU provider), not {request.precision} {fmt} for {request.target}"
        )
    if request.static_int8 or request.build_engines:
        raise Unsupported(f"--static-int8 and --build-engines do not apply to a {source.kind} model")
    steps: dict[str, float] = {}
    mark = time.monotonic()
    converted = classic.convert(source)
    steps["convert_s"] = round(time.monotonic() - mark, 2)
    log(f"converted with {converted.library} in {steps['convert_s']:.1f} s")
    rows = classic.gate_rows(request.calibration, converted.features)
    batch_sizes = sorted(set(request.batch_sizes))
    task = "classification" if converted.classifier else "regression"
    report = CompileReport(
        str(request.source), source.kind, task, request.target, request.precision, fmt,
        [], batch_sizes, host_info(cpu_description()), steps,
    )  # fmt: skip
    report.notes = [f"converted from {converted.library}; the gate compares its '{converted.compared}'"]
    with tempfile.TemporaryDirectory(prefix="modelfleet-compile-") as scratch:
        final = Path(scratch) / "model.onnx"
        final.write_bytes(converted.model.SerializeToString())
        import onnxruntime as ort

        session = ort.InferenceSession(str(final), providers=["CPUExecutionProvider"])
        mark = time.monotonic()
        report.gate = classic.run_gate(converted, session, rows, request.thresholds)
        steps["gate_s"] = round(time.monotonic() - mark, 2)
        log(gate_line(report))
        if request.profile_s > 0:
            mark = time.monotonic()
            report.profile = profile_rows(
                lambda feeds: session.run(None, feeds)[0], classic.INPUT, converted.features,
                batch_sizes, request.profile_s,
            )  # fmt: skip
            steps["profile_s"] = round(time.monotonic() - mark, 2)
        report.files = {final.name: final.stat().st_size}
        if not report.gate.passed:
            reject(report, request, started)
        write_model([final], _config(converted, report), report, request, started)
    if request.report is not None:
        report.write(request.report)
    log(f"{request.out.name}: version {report.written_to} written in {steps['total_s']:.1f} s")
    return report


def _config(converted: classic.Converted, report: CompileReport) -> ModelConfig:
    inputs, outputs = classic.signature(converted.model)
    batch = max(best_batch(report.profile), 1) if report.profile else 64
    return ModelConfig.model_validate(
        {
            "backend": "onnxruntime",
            "max_batch_size": REQUEST_MAX_BATCH,
            "inputs": inputs,
            "outputs": outputs,
            "dynamic_batching": {"max_batch_size": batch},
        }
    )
