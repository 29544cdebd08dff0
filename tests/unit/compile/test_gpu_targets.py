"""cuda and tensorrt targets on a machine without a GPU: the fp16 ONNX is made and checked
structurally and by the gate on ONNX Runtime's CPU provider; TensorRT options are written into
config.yaml (tests/unit/runtimes/test_providers.py renders them); building engines is refused
without the provider.
Nothing here runs on a GPU or through TensorRT."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import yaml

from modelfleet.compile.pipeline import CompileRequest, compile_model
from modelfleet.compile.report import CompileReport
from modelfleet.compile.targets import Precision, Target
from modelfleet.repository.config import TensorrtOptions
from modelfleet.repository.folder import FolderRepository
from tests.unit.compile.tiny_bert import SEQ_LENS, quiet_hf, tiny_bert

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    quiet_hf()
    return tiny_bert(tmp_path_factory.mktemp("src") / "clf")


def _compile(source: Path, out: Path, target: Target, precision: Precision) -> CompileReport:
    request = CompileRequest(
        source=source, out=out, target=target, precision=precision, seq_lens=SEQ_LENS, profile_s=0.0
    )
    return compile_model(request, log=lambda _line: None)


def _weights(path: Path) -> dict[int, int]:
    """Elements per floating-point type, over the initializers of more than 16 elements (weights)."""
    counts: dict[int, int] = {}
    for tensor in onnx.load(str(path)).graph.initializer:
        size = int(onnx.numpy_helper.to_array(tensor).size)
        if size > 16 and tensor.data_type in (FLOAT, FLOAT16, onnx.TensorProto.DOUBLE):
            counts[tensor.data_type] = counts.get(tensor.data_type, 0) + size
    return counts


def test_cuda_fp16_is_an_fp16_onnx_with_the_fp32_signature(classifier: Path, tmp_path: Path) -> None:
    fp32 = _compile(classifier, tmp_path / "repo" / "f32", Target.CUDA, Precision.FP32)
    fp16 = _compile(classifier, tmp_path / "repo" / "f16", Target.CUDA, Precision.FP16)
    half, full = (
        tmp_path / "repo" / "f16" / "1" / "model.onnx",
        tmp_path / "repo" / "f32" / "1" / "model.onnx",
    )
    assert set(_weights(half)) == {FLOAT16} and set(_weights(full)) == {FLOAT}
    assert sum(_weights(half).values()) == sum(_weights(full).values())  # every weight, halved
    graph = onnx.load(str(half)).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.INT64] * 2
    assert [o.type.tensor_type.elem_type for o in graph.output] == [FLOAT]
    assert fp16.gate is not None and fp32.gate is not None and fp16.gate.passed
    assert fp16.gate.max_abs_diff > 10 * fp32.gate.max_abs_diff  # fp16 arithmetic, not fp32 under its name
    assert any("not run on a GPU by cuda" in note for note in fp16.notes)
    assert any("fp16 weights and activations" in note for note in fp16.notes)
    served = FolderRepository(tmp_path / "repo").fetch("f16")
    assert served.config.device == "cuda" and served.config.onnxruntime.tensorrt is None
    assert served.config.onnxruntime.graph_optimization == "all"  # CUDA's fusions are made at load


def test_tensorrt_writes_its_provider_options_and_keeps_an_fp32_onnx(
    classifier: Path, tmp_path: Path
) -> None:
    report = _compile(classifier, tmp_path / "repo" / "trt", Target.TENSORRT, Precision.FP16)
    folder = tmp_path / "repo" / "trt"
    written = yaml.safe_load((folder / "config.yaml").read_text())
    assert written["device"] == "cuda"
    assert written["onnxruntime"]["tensorrt"] == {
        "fp16": True, "engine_cache": "trt-engines", "max_workspace_bytes": 2 << 30,
    }  # fmt: skip
    options = FolderRepository(tmp_path / "repo").fetch("trt").config.onnxruntime.tensorrt
    assert options == TensorrtOptions(fp16=True)
    assert set(_weights(folder / "1" / "model.onnx")) == {FLOAT}  # TensorRT picks fp16 kernels itself
    assert any(
        "engines are built on the first load" in note and "not TensorRT's fp16" in note
        for note in report.notes
    )
    assert json.loads((folder / "1" / "compile.json").read_text())["precision"] == "fp16"


def test_the_cli_writes_the_workspace_asked_for(classifier: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelfleet.cli import build_app

    out = tmp_path / "repo" / "w"
    args = ["compile", str(classifier), "--out", str(out), "--target", "tensorrt", "--seq-lens", "16"]
    result = CliRunner().invoke(
        build_app(), [*args, "--trt-workspace-bytes", str(1 << 28), "--profile-s", "0"]
    )
    assert result.exit_code == 0, result.output
    assert (
        yaml.safe_load((out / "config.yaml").read_text())["onnxruntime"]["tensorrt"]["max_workspace_bytes"]
        == 1 << 28
    )
    result = CliRunner().invoke(build_app(), [*args, "--trt-workspace-bytes", "1000"])
    assert result.exit_code == 2 and "Invalid value for '--trt-workspace-bytes'" in result.output
