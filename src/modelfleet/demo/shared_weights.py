"""ONNX models of the demo repository that take their weights from the repository's blob store:
initializers turned into blob references, the version folder's files, and a session that supplies them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from modelfleet.demo.onnx_files import MODEL_FILENAME, read_weights
from modelfleet.protocol.datatypes import datatype_of
from modelfleet.repository.weights import (
    MANIFEST,
    SHARED_PLACEHOLDER,
    TensorRef,
    WeightsManifest,
    blob_relpath,
    open_blob,
    read_manifest,
    write_blob,
)

SHARED_FILES = (MODEL_FILENAME, SHARED_PLACEHOLDER, MANIFEST)
"""A version folder whose ONNX model takes weights from the blob store."""


BlobStore = Callable[[str, np.ndarray], str]
"""Stores (or finds) an initializer's value, by name, as a blob; returns the blob's SHA-256 hex."""


def store_in(repo_root: Path) -> BlobStore:
    """Writes blobs into the repository at repo_root (a blob already there is kept)."""
    return lambda _name, value: write_blob(repo_root, value)


def move_to_blobs(
    model: onnx.ModelProto, store: BlobStore, keep: Collection[str] = (), folder: Path | None = None
) -> WeightsManifest:
    """Hand every initializer not named in `keep` to `store` and leave a blob reference in its place
    (changes `model`); the manifest naming them. `folder` holds the model's weights file, if any.
    """
    refs: dict[str, TensorRef] = {}
    for name, value in read_weights(model, folder).items():
        if name not in keep:
            refs[name] = TensorRef(
                blob=store(name, value), datatype=datatype_of(value), shape=list(value.shape)
            )
    for tensor in model.graph.initializer:
        if tensor.name in refs:
            tensor.CopyFrom(
                blob_reference(tensor.name, tensor.data_type, list(tensor.dims), refs[tensor.name].nbytes)
            )
    return WeightsManifest(tensors=refs)


def blob_reference(name: str, data_type: int, dims: list[int], nbytes: int) -> TensorProto:
    """An initializer whose value the server supplies from the blob store: external data in the empty
    placeholder file, so that ONNX Runtime loading it without the blob fails instead of reading garbage."""
    tensor = TensorProto(name=name, data_type=data_type, dims=dims, data_location=TensorProto.EXTERNAL)
    for key, value in (("location", SHARED_PLACEHOLDER), ("offset", "0"), ("length", str(nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def write_shared_model(folder: Path, model: bytes, manifest: str) -> None:
    """folder/model.onnx (serialized), the empty placeholder and weights.json (its JSON text)."""
    (folder / MODEL_FILENAME).write_bytes(model)
    (folder / SHARED_PLACEHOLDER).write_bytes(b"")
    (folder / MANIFEST).write_text(manifest, encoding="utf-8")


class BlobSession:
    """An ONNX Runtime session over a version folder written by `write_shared_model`, its blobs
    supplied from repo_root with `SessionOptions.add_initializer`, as the server does."""

    def __init__(self, folder: Path, repo_root: Path) -> None:
        manifest = read_manifest(folder)
        if manifest is None:
            raise ValueError(f"{folder} has no {MANIFEST}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # ONNX Runtime borrows these buffers: they must live as long as the session.
        self._values = []
        for name, ref in manifest.tensors.items():
            value = ort.OrtValue.ortvalue_from_numpy(open_blob(repo_root / blob_relpath(ref.blob), ref))
            options.add_initializer(name, value)
            self._values.append(value)
        self._session = ort.InferenceSession(
            str(folder / MODEL_FILENAME), options, providers=["CPUExecutionProvider"]
        )

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result: list[np.ndarray] = self._session.run(list(outputs), dict(feeds))
        return result
