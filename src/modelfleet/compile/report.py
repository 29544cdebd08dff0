"""compile.json: what was compiled from what, how long each step took, the accuracy gate's verdict
and the profile on this machine. Kept in the version folder, or beside the repository's models
(`.NAME.compile-rejected.json`) when the gate refuses the model.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelfleet.compile.gate import GateResult
from modelfleet.compile.profile import Cell
from modelfleet.compile.writer import write_atomic

REPORT_FILE = "compile.json"


@dataclass
class CompileReport:
    source: str
    source_kind: str
    task: str
    target: str
    precision: str
    format: str
    seq_lens: list[int]
    batch_sizes: list[int]
    host: dict[str, Any] = field(default_factory=dict)
    steps_s: dict[str, float] = field(default_factory=dict)
    gate: GateResult | None = None
    profile: list[Cell] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    neuron_placement: dict[str, Any] | None = None  # target neuron: operators on the device (neuron.py)
    status: str = "pending"  # accepted | rejected
    written_to: str | None = None
    created: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["gate"] = self.gate.to_json() if self.gate is not None else None
        data["profile"] = [c.to_json() for c in self.profile]
        return data

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")


def host_info(cpu: str) -> dict[str, Any]:
    import onnxruntime

    info: dict[str, Any] = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info
