"""torch.export sources: a tiny token model saved with torch.export.save, compiled to ONNX through
the dynamo exporter (fp32 and int8) and to TorchScript, each gated against the loaded program."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from modelfleet.compile.errors import Unsupported
from modelfleet.compile.pipeline import CompileRequest, compile_model
from modelfleet.compile.report import CompileReport
from modelfleet.compile.targets import Format, Precision
from modelfleet.repository.folder import FolderRepository

VOCAB, WIDTH = 60, 12


class MeanPooled(torch.nn.Module):
    """Token embeddings, a layer, masked mean pooling: an embedding model's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.layer = torch.nn.Linear(16, WIDTH)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.layer(self.embed(input_ids)))
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _save(path: Path, dynamic: bool = True) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    module = MeanPooled().eval()
    ids = torch.randint(1, VOCAB, (2, 8))
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
    shapes = {"input_ids": axes, "attention_mask": axes} if dynamic else None
    torch.export.save(
        torch.export.export(module, (ids, torch.ones_like(ids)), dynamic_shapes=shapes), str(path)
    )
    return path, module


def _compile(source: Path, out: Path, **options: object) -> CompileReport:
    request = CompileRequest(
        source=source, out=out, seq_lens=(8, 16), batch_sizes=(1,), profile_s=0.0, **options
    )  # type: ignore[arg-type]
    return compile_model(request, log=lambda _line: None)


def test_a_program_compiles_to_onnx_and_torchscript(tmp_path: Path) -> None:
    source, module = _save(tmp_path / "pooled.pt2")
    repo = tmp_path / "repo"
    for name, options in (
        ("fp32", {}),
        ("int8", {"precision": Precision.INT8}),
        ("ts", {"format": Format.TORCHSCRIPT}),
        ("bf16", {"precision": Precision.BF16}),
    ):
        report = _compile(source, repo / name, **options)
        assert report.source_kind == "torch-export" and report.gate is not None and report.gate.passed, name
    assert FolderRepository(repo).fetch("bf16").config.backend == "torchscript"
    config = FolderRepository(repo).fetch("fp32").config
    assert [(t.name, t.shape) for t in config.outputs or []] == [("embedding", [-1, WIDTH])]
    assert json.loads((repo / "fp32" / "1" / "compile.json").read_text())["steps_s"]["export_s"] >= 0
    session = ort.InferenceSession(
        str(repo / "fp32" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    ids = np.array(
        [[5, 9, 14, 0, 0], [3, 3, 3, 3, 3], [7, 1, 0, 0, 0]], np.int64
    )  # a shape not exported with
    mask = (ids > 0).astype(np.int64)
    (got,) = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
    with torch.inference_mode():
        expected = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_programs_with_static_shapes_or_other_inputs_are_refused(tmp_path: Path) -> None:
    source, _ = _save(tmp_path / "static.pt2", dynamic=False)
    with pytest.raises(
        Unsupported, match=r"static.pt2 was exported with static shapes .*'input_ids': \[2, 8\]"
    ):
        _compile(source, tmp_path / "repo" / "s")

    class Features(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    torch.export.save(torch.export.export(Features(), (torch.ones(2, 3),)), str(tmp_path / "f.pt2"))
    with pytest.raises(Unsupported, match=r"f.pt2 takes \['x'\]: torch.export sources must take"):
        _compile(tmp_path / "f.pt2", tmp_path / "repo" / "f")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
