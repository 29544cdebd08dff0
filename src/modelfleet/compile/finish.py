"""The end of every compile: the gate's verdict logged, then either the report kept alone (refused)
or the model folder staged and renamed into the repository (accepted)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import NoReturn

from modelfleet.compile.errors import GateFailed
from modelfleet.compile.report import REPORT_FILE, CompileReport
from modelfleet.compile.request import CompileRequest
from modelfleet.compile.writer import config_text, split_out, staged_model
from modelfleet.repository.config import CONFIG_FILENAME, ModelConfig


def reject(report: CompileReport, request: CompileRequest, started: float) -> NoReturn:
    """Keep the report (nothing else: REPO/.NAME.compile-rejected.json unless --report) and raise GateFailed."""
    assert report.gate is not None
    repo, name = split_out(request.out)
    report.status = "rejected"
    report.steps_s["total_s"] = round(time.monotonic() - started, 2)
    kept = request.report or repo / f".{name}.compile-rejected.json"
    kept.parent.mkdir(parents=True, exist_ok=True)
    report.write(kept)
    raise GateFailed(
        f"accuracy gate refused the {request.precision} model: {'; '.join(report.gate.failures)}; "
        f"nothing was written to the repository; report kept at {kept}"
    )


def write_model(
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


def gate_line(report: CompileReport) -> str:
    g = report.gate
    assert g is not None
    agreement = f", top-1 agreement {g.top1_agreement:.1%}" if g.top1_agreement is not None else ""
    verdict = "passed" if g.passed else "FAILED: " + "; ".join(g.failures)
    return (
        f"accuracy gate on {g.samples} samples: cosine {g.cosine_mean:.5f} (min {g.cosine_min:.5f}), "
        f"max |diff| {g.max_abs_diff:.3g}{agreement}: {verdict}"
    )
