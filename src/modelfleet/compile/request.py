"""What one `modelfleet compile` is asked to do, parsed once at the edge (the CLI or a caller)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelfleet.compile import gate as gates
from modelfleet.compile.targets import Format, Precision, Target

DEFAULT_SEQ_LENS = (32, 64, 128)
DEFAULT_BATCH_SIZES = (1, 8, 16)


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
    build_engines: bool = False  # tensorrt: build the engines now (needs the TensorRT provider and a GPU)
    trt_workspace_bytes: int = 2 << 30  # tensorrt: the builder's workspace
