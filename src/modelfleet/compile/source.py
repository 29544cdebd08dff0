"""What SRC is, checked before use: a Hugging Face folder (config.json and weights), an ONNX file,
a TorchScript or torch.export file, or a scikit-learn / XGBoost / LightGBM model.

Weights are safetensors, whose header is validated against the file size (a truncated download is
refused by name). Pickle checkpoints (pytorch_model.bin, *.pt, *.ckpt) can run code when loaded:
they are refused unless the caller trusts them, and even then read with `weights_only=True`.
A pickled scikit-learn estimator (.joblib, .pkl, .pickle) has no weights-only reading: it is
refused unless trusted, and then unpickled with its globals narrowed (unpickle.py). XGBoost (.json, .ubj)
and LightGBM (.txt) models are read in their libraries' own formats, which hold no code.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from modelfleet.compile.errors import CompileError, Unsupported

CONFIG_JSON = "config.json"
TOKENIZER_JSON = "tokenizer.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ESTIMATOR_SUFFIXES = (".joblib", ".pkl", ".pickle")
_HEADER_MAX_BYTES = 100 << 20  # the safetensors library's own limit


class SourceKind(StrEnum):
    HUGGING_FACE = "hugging-face"
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    PROGRAM = "torch-export"  # torch.export.save
    SKLEARN = "scikit-learn"  # a pickled estimator (or an XGBoost / LightGBM scikit-learn wrapper)
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"

    @property
    def classic(self) -> bool:
        """Feature-row models converted by skl2onnx / onnxmltools (compile/classic.py)."""
        return self in (SourceKind.SKLEARN, SourceKind.XGBOOST, SourceKind.LIGHTGBM)


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    """config.json of a Hugging Face folder."""
    weights: tuple[Path, ...] = ()
    """Its safetensors files, or the one pickle checkpoint when trusted."""

    @property
    def pickled(self) -> bool:
        return any(w.suffix in PICKLE_SUFFIXES for w in self.weights)

    @property
    def tokenizer(self) -> Path | None:
        path = self.path / TOKENIZER_JSON
        return path if self.kind == SourceKind.HUGGING_FACE and path.is_file() else None


def inspect_source(path: Path, trust_pickle: bool = False) -> Source:
    """The source at `path`, its files checked; CompileError saying what is wrong otherwise."""
    if not path.exists():
        raise CompileError(f"{path} does not exist")
    if path.is_file():
        return _file_source(path, trust_pickle)
    config_path = path / CONFIG_JSON
    if not config_path.is_file():
        raise CompileError(f"{path} is not a model folder: it has no {CONFIG_JSON} (a Hugging Face model)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompileError(f"{path.name}/{CONFIG_JSON} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise CompileError(f"{path.name}/{CONFIG_JSON} names no model_type: not a Hugging Face model config")
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        for file in safetensors:
            check_safetensors(file)
        return Source(SourceKind.HUGGING_FACE, path, config, tuple(safetensors))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if not pickles:
        raise CompileError(f"{path} has {CONFIG_JSON} but no weights (*.safetensors)")
    if not trust_pickle:
        raise CompileError(
            f"{path.name} holds only pickle checkpoints ({', '.join(p.name for p in pickles)}), which can run "
            "code when loaded; convert them to safetensors, or pass --trust-pickle if you trust their origin "
            "(they are then read with torch.load(weights_only=True))"
        )
    if len(pickles) > 1:
        raise CompileError(
            f"{path.name} holds several pickle checkpoints; keep one: {[p.name for p in pickles]}"
        )
    return Source(SourceKind.HUGGING_FACE, path, config, (pickles[0],))


def _file_source(path: Path, trust_pickle: bool) -> Source:
    suffix = path.suffix
    if suffix == ".onnx":
        return Source(SourceKind.ONNX, path)
    if suffix == ".pt2":
        return Source(SourceKind.PROGRAM, path)
    if suffix in (".pt", ".pth") and is_torchscript(path):
        return Source(SourceKind.TORCHSCRIPT, path)
    if suffix in (".json", ".ubj"):
        return Source(SourceKind.XGBOOST, path)
    if suffix == ".txt" and _is_lightgbm(path):
        return Source(SourceKind.LIGHTGBM, path)
    if suffix in ESTIMATOR_SUFFIXES:
        if not trust_pickle:
            raise CompileError(
                f"{path.name} is a pickle, which runs code when loaded; pass --trust-pickle if you trust "
                "its origin (a scikit-learn estimator is then unpickled, limited to the classes estimators use), "
                "or save XGBoost / LightGBM models in their own formats (.json / .txt)"
            )
        return Source(SourceKind.SKLEARN, path)
    if suffix in PICKLE_SUFFIXES:
        raise CompileError(
            f"{path.name} is a bare checkpoint: give the Hugging Face folder holding it and its {CONFIG_JSON}"
        )
    raise Unsupported(
        f"{path.name}: a source is a Hugging Face folder, an .onnx file, a TorchScript .pt, a torch.export "
        ".pt2, an XGBoost .json / .ubj, a LightGBM .txt or a pickled scikit-learn estimator (.joblib / .pkl)"
    )


def _is_lightgbm(path: Path) -> bool:
    """A LightGBM text model starts with 'tree' then 'version=...'."""
    with path.open("rb") as f:
        head = f.read(32)
    return head.startswith(b"tree\n") or head.startswith(b"tree\r\n")


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (torch.jit.save: a zip with code/), not a torch.save checkpoint
    (a zip or a pickle with no code/ in it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header (tensor name -> dtype, shape, data_offsets) and where the data starts."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CompileError(f"{path.name} is truncated: {len(head)} bytes, not a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > _HEADER_MAX_BYTES:
            raise CompileError(f"{path.name}: header of {length} bytes; not a safetensors file")
        raw = f.read(length)
    if len(raw) < length:
        raise CompileError(f"{path.name} is truncated inside its header ({len(raw)} of {length} bytes)")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CompileError(f"{path.name}: the header is not JSON; not a safetensors file") from None
    if not isinstance(header, dict):
        raise CompileError(f"{path.name}: the header is not a mapping; not a safetensors file")
    header.pop("__metadata__", None)
    return header, 8 + length


def check_safetensors(path: Path) -> None:
    """CompileError when the file is not safetensors or is shorter than its header says."""
    header, start = safetensors_header(path)
    try:
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise CompileError(
            f"{path.name}: a tensor entry has no data_offsets; not a safetensors file"
        ) from None
    size = path.stat().st_size
    if size < start + end:
        raise CompileError(
            f"{path.name} is truncated: {size} bytes, its header needs {start + end} (download it again)"
        )
