from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from modelfleet.errors import InferenceFailed, ModelLoadError
from modelfleet.repository.config import ModelConfig, TensorConfig
from modelfleet.runtimes.base import LoadSpec, load_runtime
from modelfleet.runtimes.torchscript import SIGNATURE_FILE, signature_json

INPUTS = [TensorConfig(name="x", datatype="FP32", shape=[-1, 2])]
OUTPUTS = [
    TensorConfig(name="doubled", datatype="FP32", shape=[-1, 2]),
    TensorConfig(name="total", datatype="FP32", shape=[-1]),
]


class TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x.to(torch.bfloat16) * 2), x.sum(dim=1)


def _save(tmp_path: Path, signature: bool = True) -> Path:
    path = tmp_path / "m" / "1" / "model.pt"
    path.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(TwoOutputs())  # type: ignore[no-untyped-call]
        extra = {SIGNATURE_FILE: signature_json(INPUTS, OUTPUTS)} if signature else {}
        torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


def _spec(path: Path, config: ModelConfig | None = None) -> LoadSpec:
    return LoadSpec("m", 1, path, config or ModelConfig(backend="torchscript"), 1)


def test_loads_with_the_signature_inside_and_answers_fp32(tmp_path: Path) -> None:
    model = load_runtime(_spec(_save(tmp_path)))
    assert [t.name for t in model.inputs] == ["x"] and [t.shape for t in model.outputs] == [(-1, 2), (-1,)]
    total, doubled = model.infer({"x": np.array([[1.0, 2.0], [3.0, 4.5]], np.float32)}, ["total", "doubled"])
    assert total.tolist() == [3.0, 7.5]
    assert doubled.dtype == np.float32 and doubled.tolist() == [[2.0, 4.0], [6.0, 9.0]]
    model.unload()


def test_the_config_signature_wins_and_one_is_needed(tmp_path: Path) -> None:
    path = _save(tmp_path, signature=False)
    with pytest.raises(
        ModelLoadError, match="carries no signature: declare inputs and outputs in config.yaml"
    ):
        load_runtime(_spec(path))
    config = ModelConfig(backend="torchscript", inputs=INPUTS, outputs=OUTPUTS)
    assert load_runtime(_spec(path, config)).outputs[1].name == "total"


def test_bad_files_and_failing_runs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(ModelLoadError, match="torch cannot load m/1/bad.pt"):
        load_runtime(_spec(bad))
    with pytest.raises(ModelLoadError, match="has no missing.pt"):
        load_runtime(_spec(tmp_path / "missing.pt"))
    model = load_runtime(_spec(_save(tmp_path)))
    with pytest.raises(InferenceFailed, match="model 'm' failed"):
        model.infer({"x": np.ones(3, np.float32)}, ["doubled"])
