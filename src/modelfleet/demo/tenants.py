"""Tenant models, written without torch from minilm-sentiment and minilm-base: adapters (a head of
their own over minilm-base) or full copies (minilm-sentiment's graph fine-tuned BitFit-style).

Both kinds keep their weights in the repository's blob store, so the encoder is on disk once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    load_without_weights,
    read_initializers,
    read_weights,
    set_initializers,
)
from modelfleet.demo.shared_weights import move_to_blobs, write_shared_model
from modelfleet.repository.weights import MANIFEST, WeightsManifest, read_manifest, tensor_ref

MAX_TENANTS = 99_999
ADAPTER_TENSORS = ("weight", "bias")
"""An adapter's head in its weights.json: weight [out, in], bias [out] (modelfleet.runtimes.adapter)."""
_NAME_PREFIX = "tenant-"
_SEED = 20240  # any fixed number: tenants are the same on every build
# Noise as a fraction of each tensor's spread: every tenant answers differently, yet all still
# classify the sentiment sentences right (checked for the first 3,000 tenants).
_HEAD_WEIGHT_NOISE = 0.3
_HEAD_BIAS_NOISE = 0.2  # absolute: the head's two biases have no useful spread
_TUNED_NOISE = 0.3
_MIN_SPREAD = 0.01  # for a constant tensor, whose spread is 0
_LAYER = re.compile(r"\.layer\.(\d+)\.")


def tenant_name(index: int) -> str:
    """tenant-00001 for index 1: five digits, so that names sort in index order."""
    if not 1 <= index <= MAX_TENANTS:
        raise ValueError(f"tenant index must be between 1 and {MAX_TENANTS}, got {index}")
    return f"{_NAME_PREFIX}{index:05d}"


def tenant_head(weight: np.ndarray, bias: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The base head plus small noise drawn from a generator seeded by the tenant index."""
    rng = np.random.default_rng([_SEED, index])
    new_weight = _perturbed(weight, rng, _HEAD_WEIGHT_NOISE)
    new_bias = bias + rng.normal(0.0, _HEAD_BIAS_NOISE, bias.shape)
    return new_weight, new_bias.astype(bias.dtype)


def tuned_tensors(values: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Tenant `index`'s fine-tuned versions of these tensors, each with noise of its own spread."""
    rng = np.random.default_rng([_SEED, index, 1])  # a stream apart from the head's
    return {name: _perturbed(value, rng, _TUNED_NOISE) for name, value in values.items()}


def bitfit_names(names: Iterable[str]) -> list[str]:
    """The last encoder layer's bias vectors and LayerNorm parameters, in the given order: the
    tensors BitFit-style fine-tuning changes (names as in `encoder.encoder.layer.5.output.dense.bias`)."""
    names = list(names)
    layers = {int(m.group(1)) for name in names if (m := _LAYER.search(name))}
    if not layers:
        raise ValueError("no encoder layer ('.layer.N.') among the initializers")
    last = f".layer.{max(layers)}."
    return [n for n in names if last in n and (n.endswith(".bias") or "LayerNorm" in n)]


def _perturbed(value: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    spread = max(float(value.std()), _MIN_SPREAD)
    return (value + rng.normal(0.0, scale * spread, value.shape)).astype(value.dtype)


class AdapterWriter:
    """Writes adapter version folders: weights.json with the tenant's head, stored as blobs."""

    def __init__(self, sentiment_folder: Path, repo_root: Path) -> None:
        head = read_initializers(load_without_weights(sentiment_folder / MODEL_FILENAME), HEAD_INITIALIZERS)
        self._weight, self._bias = (head[name] for name in HEAD_INITIALIZERS)
        self._root = repo_root

    def write(self, version_folder: Path, index: int) -> None:
        head = tenant_head(self._weight, self._bias, index)
        refs = {
            name: tensor_ref(self._root, value, "FP32")
            for name, value in zip(ADAPTER_TENSORS, head, strict=True)
        }
        (version_folder / MANIFEST).write_text(WeightsManifest(tensors=refs).model_dump_json(), "utf-8")


class FullCopyWriter:
    """Writes full-copy version folders: minilm-sentiment's graph, its last layer's biases and LayerNorm
    parameters and its head the tenant's own (inline), every other weight one of minilm-base's blobs.

    The graph is read once; each tenant only replaces the tuned initializers and serializes it.
    """

    def __init__(self, sentiment_folder: Path, base_folder: Path) -> None:
        model = load_without_weights(sentiment_folder / MODEL_FILENAME)
        base = read_manifest(base_folder)
        self._base_blobs = base.blobs if base is not None else set()
        tuned = bitfit_names(t.name for t in model.graph.initializer)
        values = read_weights(model, sentiment_folder)
        self._tuned = {name: np.array(values[name]) for name in tuned}  # copied out of the memory map
        self._weight, self._bias = (values[name] for name in HEAD_INITIALIZERS)
        keep = [*tuned, *HEAD_INITIALIZERS]
        manifest = move_to_blobs(model, self._base_blob, keep=keep, folder=sentiment_folder)
        self._manifest = manifest.model_dump_json()
        self._model = model

    def write(self, version_folder: Path, index: int) -> None:
        values = tuned_tensors(self._tuned, index)
        values.update(zip(HEAD_INITIALIZERS, tenant_head(self._weight, self._bias, index), strict=True))
        set_initializers(self._model, values)
        write_shared_model(version_folder, self._model.SerializeToString(), self._manifest)

    def _base_blob(self, name: str, value: np.ndarray) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()  # as write_blob names it
        if digest not in self._base_blobs:
            raise ValueError(
                f"minilm-sentiment's '{name}' is not one of minilm-base's blobs: the two come from "
                "different exports; rebuild them with --force"
            )
        return digest
