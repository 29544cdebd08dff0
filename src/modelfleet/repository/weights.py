"""Content-addressed weight blobs: tensors stored once per repository, named by their SHA-256.

A model version may hold `weights.json`, naming the tensors it takes from the blob store:

    {"format": 1, "tensors": {"encoder.layer.0.attention.self.query.weight":
                              {"blob": "<sha256 hex>", "datatype": "FP32", "shape": [384, 384]}}}

and the bytes live once in `REPO/.blobs/<first two hex digits>/<hex>` (raw little-endian, C order).
Models that are fine-tuned copies of one base reference the same blobs, so the repository stores
each shared tensor once and the server can hold it in memory once.

In an ONNX model, such a tensor stays an initializer marked as external data in the empty file
`shared.weights` next to model.onnx: ONNX Runtime never reads it (the server supplies the tensor),
and a model loaded without its blobs fails with a clear out-of-bounds error instead of reading
garbage.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelfleet.errors import ModelLoadError
from modelfleet.protocol.datatypes import DATATYPES

MANIFEST = "weights.json"
SHARED_PLACEHOLDER = "shared.weights"
BLOBS_DIR = ".blobs"
_HEX = re.compile(r"[0-9a-f]{64}")
_MANIFEST_MAX_BYTES = 16 << 20


class TensorRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    blob: str
    """SHA-256 of the tensor's bytes, lower-case hex."""
    datatype: str
    """V2 datatype (not BYTES)."""
    shape: list[Annotated[int, Field(ge=0)]]

    @model_validator(mode="after")
    def _valid(self) -> TensorRef:
        if not _HEX.fullmatch(self.blob):
            raise ValueError("blob must be 64 lower-case hex digits (a SHA-256)")
        if self.datatype not in DATATYPES or DATATYPES[self.datatype].is_bytes:
            raise ValueError(f"datatype {self.datatype} cannot be a weight blob")
        return self

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * DATATYPES[self.datatype].itemsize

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype].dtype


class WeightsManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = 1
    tensors: dict[str, TensorRef]

    @model_validator(mode="after")
    def _known_format(self) -> WeightsManifest:
        if self.format != 1:
            raise ValueError(f"unknown weights.json format {self.format}; this server reads format 1")
        return self

    @property
    def blobs(self) -> set[str]:
        return {t.blob for t in self.tensors.values()}


def read_manifest(version_dir: Path) -> WeightsManifest | None:
    """The version's weights.json, or None when it has none; ModelLoadError when it is bad."""
    path = version_dir / MANIFEST
    if not path.is_file():
        return None
    if path.stat().st_size > _MANIFEST_MAX_BYTES:
        raise ModelLoadError(f"{MANIFEST} is larger than {_MANIFEST_MAX_BYTES} bytes")
    try:
        return WeightsManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or MANIFEST
        raise ModelLoadError(f"{MANIFEST}: {where}: {first['msg'].removeprefix('Value error, ')}") from None


def blob_relpath(digest: str) -> str:
    return f"{BLOBS_DIR}/{digest[:2]}/{digest}"


def write_blob(repo_root: Path, array: np.ndarray) -> str:
    """Store a tensor's bytes under their SHA-256 (once: an existing blob is kept); return the hex."""
    data = np.ascontiguousarray(array).tobytes()
    digest = hashlib.sha256(data).hexdigest()
    path = repo_root / blob_relpath(digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes it private; the server reading the repository may be another user
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return digest


def tensor_ref(repo_root: Path, array: np.ndarray, datatype: str) -> TensorRef:
    return TensorRef(blob=write_blob(repo_root, array), datatype=datatype, shape=list(array.shape))


def open_blob(path: Path, ref: TensorRef) -> np.ndarray:
    """A read-only memory map of a blob as its tensor (pages shared with every other user of the file)."""
    size = path.stat().st_size
    if size != ref.nbytes:
        raise ModelLoadError(
            f"blob {ref.blob[:12]}… holds {size} bytes, {ref.datatype} {ref.shape} needs {ref.nbytes}"
        )
    if ref.nbytes == 0:
        return np.zeros(ref.shape, dtype=ref.dtype)
    return np.memmap(path, dtype=ref.dtype, mode="r", shape=tuple(ref.shape))
