from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from modelfleet.compile.errors import CompileError, Unsupported
from modelfleet.compile.source import SourceKind, check_safetensors, inspect_source


def _safetensors(path: Path, data_bytes: int = 16, cut: int = 0) -> Path:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [data_bytes // 4], "data_offsets": [0, data_bytes]}}
    ).encode()
    blob = struct.pack("<Q", len(header)) + header + b"\0" * data_bytes
    path.write_bytes(blob[: len(blob) - cut])
    return path


def _hf_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


def test_a_hugging_face_folder_and_an_onnx_file(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "m")
    _safetensors(folder / "model.safetensors")
    source = inspect_source(folder)
    assert source.kind == SourceKind.HUGGING_FACE and not source.pickled
    assert source.weights == (folder / "model.safetensors",)
    (tmp_path / "x.onnx").write_bytes(b"")
    assert inspect_source(tmp_path / "x.onnx").kind == SourceKind.ONNX


def test_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="not a model folder: it has no config.json"):
        inspect_source(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CompileError, match="not valid JSON"):
        inspect_source(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CompileError, match="names no model_type"):
        inspect_source(tmp_path)
    _hf_folder(tmp_path)
    with pytest.raises(CompileError, match="no weights"):
        inspect_source(tmp_path)
    with pytest.raises(CompileError, match="does not exist"):
        inspect_source(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        Unsupported, match=r"notes.txt: a source is a Hugging Face folder, .* a LightGBM .txt"
    ):
        inspect_source(tmp_path / "notes.txt")


def test_truncated_safetensors_are_refused_by_name(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "m")
    _safetensors(folder / "model.safetensors", cut=5)
    with pytest.raises(
        CompileError, match=r"model.safetensors is truncated: \d+ bytes, its header needs \d+"
    ):
        inspect_source(folder)
    (folder / "model.safetensors").write_bytes(b"\1\0")
    with pytest.raises(CompileError, match="truncated: 2 bytes"):
        check_safetensors(folder / "model.safetensors")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 100) + b"{}")
    with pytest.raises(CompileError, match="truncated inside its header"):
        check_safetensors(folder / "model.safetensors")


def test_pickle_checkpoints_are_refused_unless_trusted(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "m")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CompileError, match="can run code when loaded.*--trust-pickle"):
        inspect_source(folder)
    source = inspect_source(folder, trust_pickle=True)
    assert source.pickled
    with pytest.raises(CompileError, match="bare checkpoint"):
        inspect_source(folder / "pytorch_model.bin", trust_pickle=True)
