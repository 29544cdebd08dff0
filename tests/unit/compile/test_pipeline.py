"""compile on tiny random BERTs: every output kind, the gate refusing, and the bad inputs' exit codes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from modelfleet.cli import build_app
from modelfleet.compile.errors import GateFailed
from modelfleet.compile.gate import Thresholds
from modelfleet.compile.pipeline import CompileRequest, compile_model
from modelfleet.compile.targets import Format, Precision
from modelfleet.repository.folder import FolderRepository
from tests.unit.compile.tiny_bert import SEQ_LENS, quiet_hf, tiny_bert


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    quiet_hf()
    return tiny_bert(tmp_path_factory.mktemp("src") / "clf")


def _compile(source: Path, out: Path, **options: object) -> object:
    request = CompileRequest(source=source, out=out, seq_lens=SEQ_LENS, batch_sizes=(1, 4), **options)  # type: ignore[arg-type]
    return compile_model(request, log=lambda _line: None)


def test_fp32_and_int8_onnx_folders_with_config_and_report(classifier: Path, tmp_path: Path) -> None:
    _compile(classifier, tmp_path / "clf", profile_s=0.01)
    _compile(classifier, tmp_path / "clf", precision=Precision.INT8, profile_s=0.0)
    source = FolderRepository(tmp_path).fetch("clf")
    assert source.config.backend == "onnxruntime" and source.versions == [1, 2]
    assert source.config.shape_buckets is not None and source.config.shape_buckets.sizes == [16, 32]
    assert [t.name for t in source.config.inputs or []] == ["input_ids", "attention_mask"]
    assert (source.config.outputs or [])[0].shape == [-1, 3]
    report = json.loads((tmp_path / "clf" / "1" / "compile.json").read_text())
    assert report["status"] == "accepted" and report["gate"]["passed"]
    assert report["gate"]["top1_agreement"] == 1.0 and report["gate"]["cosine_mean"] > 0.9999
    assert [(c["seq_len"], c["batch_size"]) for c in report["profile"]] == [
        (16, 1),
        (16, 4),
        (32, 1),
        (32, 4),
    ]
    int8 = json.loads((tmp_path / "clf" / "2" / "compile.json").read_text())
    assert int8["precision"] == "int8" and int8["gate"]["cosine_mean"] >= 0.99 and int8["profile"] == []
    assert int8["files"]["model.onnx"] < report["files"]["model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]  # nothing left beside it


def test_the_cpu_graph_keeps_add_and_layer_norm_and_is_served_at_the_basic_level(
    classifier: Path, tmp_path: Path
) -> None:
    """ONNX Runtime's SkipLayerNormalization was 4-5x slower than the Add and LayerNormalization it
    replaces (onnx_steps.CPU_FUSIONS_LEFT_OUT): the file holds the extended level's other fusions
    (int8 MatMuls with their bias, Gelu) and config.yaml has it loaded at the basic level, so that
    the server does not make the fusion left out."""
    import onnx
    import onnxruntime as ort

    _compile(classifier, tmp_path / "clf", precision=Precision.INT8, profile_s=0.0)
    path = tmp_path / "clf" / "1" / "model.onnx"
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 5  # 2 per layer, embeddings
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] == 14  # 6 a layer, pooler, head
    assert ops["Gelu"] == 2 and ops["MatMul"] == 2  # erf pattern fused; attention scores stay fp32
    assert FolderRepository(tmp_path).config("clf").onnxruntime.graph_optimization == "basic"
    again = ort.SessionOptions()  # the pattern is there: the extended level at load would fuse it
    again.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    again.optimized_model_filepath = str(tmp_path / "again.onnx")
    ort.InferenceSession(str(path), again, providers=["CPUExecutionProvider"])
    fused_again = Counter(n.op_type for n in onnx.load(str(tmp_path / "again.onnx")).graph.node)
    assert fused_again["SkipLayerNormalization"] > 0


def test_static_int8_is_calibrated_on_the_gate_inputs_and_checked(classifier: Path, tmp_path: Path) -> None:
    _compile(classifier, tmp_path / "clf", precision=Precision.INT8, static_int8=True, profile_s=0.0)
    report = json.loads((tmp_path / "clf" / "1" / "compile.json").read_text())
    assert report["gate"]["passed"] and report["steps_s"]["quantize_s"] > 0
    code, output = _cli(str(classifier), "--out", str(tmp_path / "x"), "--precision", "bf16", "--static-int8")
    assert code == 2 and "--static-int8 applies to --precision int8 in ONNX" in output


def test_bf16_torchscript_from_an_encoder(classifier: Path, tmp_path: Path) -> None:
    encoder = tiny_bert(tmp_path / "enc", classification=False)
    _compile(encoder, tmp_path / "repo" / "enc", precision=Precision.BF16, profile_s=0.0)
    source = FolderRepository(tmp_path / "repo").fetch("enc")
    assert source.config.backend == "torchscript" and source.model_file(1).name == "model.pt"
    assert (source.config.outputs or [])[0].name == "embedding"
    report = json.loads((tmp_path / "repo" / "enc" / "1" / "compile.json").read_text())
    assert report["task"] == "embedding" and report["gate"]["top1_agreement"] is None


def test_the_gate_refuses_and_keeps_only_the_report(classifier: Path, tmp_path: Path) -> None:
    with pytest.raises(
        GateFailed, match=r"cosine [01].\d+ < 1.5; nothing was written.*compile-rejected.json"
    ):
        _compile(
            classifier,
            tmp_path / "clf",
            precision=Precision.INT8,
            thresholds=Thresholds(min_cosine=1.5),
            profile_s=0.0,
        )
    assert [p.name for p in tmp_path.iterdir()] == [".clf.compile-rejected.json"]
    report = json.loads((tmp_path / ".clf.compile-rejected.json").read_text())
    assert report["status"] == "rejected" and report["written_to"] is None


def test_trusted_pickle_checkpoints_are_read_as_weights_only(classifier: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((classifier / "config.json").read_text())
    torch.save(load_file(str(classifier / "model.safetensors")), folder / "pytorch_model.bin")
    _compile(folder, tmp_path / "repo" / "m", trust_pickle=True, profile_s=0.0)
    report = json.loads((tmp_path / "repo" / "m" / "1" / "compile.json").read_text())
    assert report["gate"]["passed"]


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["compile", *args])
    return result.exit_code, result.output


def test_cli_exit_codes_and_messages(classifier: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "repo" / "m")
    code, output = _cli(str(tmp_path), "--out", out)
    assert code == 1 and "is not a model folder: it has no config.json" in output
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((classifier / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04 not really")
    code, output = _cli(str(pickled), "--out", out)
    assert code == 1 and "--trust-pickle" in output
    code, output = _cli(str(pickled), "--out", out, "--trust-pickle", "--seq-lens", "16")
    assert code == 1 and "cannot be read as weights only" in output
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    (unknown / "model.safetensors").write_bytes((classifier / "model.safetensors").read_bytes())
    code, output = _cli(str(unknown), "--out", out, "--seq-lens", "16")
    assert code == 1 and "transformers cannot build no-such-architecture model unknown" in output
    code, output = _cli(str(classifier), "--out", out, "--precision", "bf16", "--format", "onnx")
    assert code == 2 and "target cpu cannot run bf16 as onnx" in output
    code, output = _cli(str(classifier), "--out", out, "--target", "tensorrt", "--build-engines")
    assert code == 2 and "--build-engines needs ONNX Runtime's TensorrtExecutionProvider" in output
    code, output = _cli(str(classifier), "--out", out, "--target", "neuron", "--seq-lens", "16")
    assert code == 2 and "torch_neuronx" in output
    code, output = _cli(str(classifier), "--out", out, "--seq-lens", "128")
    assert code == 1 and "longer than the model's 64 positions" in output
    code, output = _cli(str(classifier), "--out", out, "--precision", "int4")
    assert code == 2 and "--precision must be one of" in output
    code, output = _cli(str(classifier), "--out", out, "--seq-lens", "16", "--profile-s", "0")
    assert code == 0, output
    assert "accuracy gate on 8 samples" in output
    assert not (tmp_path / "repo" / ".m.compile-rejected.json").exists()


def test_an_onnx_source_is_quantised_and_checked_against_itself(classifier: Path, tmp_path: Path) -> None:
    _compile(classifier, tmp_path / "fp32", profile_s=0.0)
    exported = tmp_path / "fp32" / "1" / "model.onnx"
    _compile(exported, tmp_path / "repo" / "q", precision=Precision.INT8, profile_s=0.0)
    report = json.loads((tmp_path / "repo" / "q" / "1" / "compile.json").read_text())
    assert report["source_kind"] == "onnx" and report["gate"]["passed"] and report["task"] == "classification"


def test_onnx_sources_without_token_inputs_are_refused(tmp_path: Path) -> None:
    from tests.models import identity

    code, output = _cli(str(identity(tmp_path / "id.onnx")), "--out", str(tmp_path / "repo" / "m"))
    assert code == 2 and "ONNX sources are compiled when they take token ids" in output
    code, output = _cli(
        str(identity(tmp_path / "id2.onnx")), "--out", str(tmp_path / "repo" / "m"), "--precision", "bf16"
    )
    assert code == 2 and "an ONNX source compiles to ONNX only" in output


def test_a_torchscript_source_compiles_to_int8_onnx(classifier: Path, tmp_path: Path) -> None:
    _compile(classifier, tmp_path / "ts", format=Format.TORCHSCRIPT, profile_s=0.0)
    scripted = tmp_path / "ts" / "1" / "model.pt"
    _compile(
        scripted, tmp_path / "repo" / "q", precision=Precision.INT8, task="classification", profile_s=0.0
    )
    report = json.loads((tmp_path / "repo" / "q" / "1" / "compile.json").read_text())
    assert report["source_kind"] == "torchscript" and report["gate"]["passed"]
    assert FolderRepository(tmp_path / "repo").fetch("q").config.outputs[0].shape == [-1, 3]  # type: ignore[index]
    code, output = _cli(str(scripted), "--out", str(tmp_path / "repo" / "b"), "--precision", "bf16")
    assert code == 2 and "a TorchScript source compiles at fp32 or int8" in output
    torch.save({"w": torch.zeros(2)}, tmp_path / "state.pt")
    code, output = _cli(str(tmp_path / "state.pt"), "--out", str(tmp_path / "repo" / "b"))
    assert code == 1 and "bare checkpoint" in output
