"""Tenant models: minilm-sentiment's graph with a head of their own, sharing the encoder weights file
on disk through hard links. Written without torch, by editing the head initializers of the ONNX graph.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    WEIGHTS_FILENAME,
    load_without_weights,
    read_initializers,
    set_initializers,
)

MAX_TENANTS = 99_999
_NAME_PREFIX = "tenant-"
_SEED = 20240  # any fixed number: tenant heads are the same on every build
_BIAS_NOISE = 0.5
_MIN_WEIGHT_NOISE = 0.01  # for a constant base head, whose spread is 0


def tenant_name(index: int) -> str:
    """tenant-00001 for index 1: five digits, so that names sort in index order."""
    if not 1 <= index <= MAX_TENANTS:
        raise ValueError(f"tenant index must be between 1 and {MAX_TENANTS}, got {index}")
    return f"{_NAME_PREFIX}{index:05d}"


def tenant_head(weight: np.ndarray, bias: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The base head plus noise drawn from a generator seeded by the tenant index.

    The weight noise has the spread of the weights themselves, so tenants keep some of the
    sentiment direction yet each answers differently.
    """
    rng = np.random.default_rng([_SEED, index])
    spread = max(float(weight.std()), _MIN_WEIGHT_NOISE)
    new_weight = weight + rng.normal(0.0, spread, weight.shape)
    new_bias = bias + rng.normal(0.0, _BIAS_NOISE, bias.shape)
    return new_weight.astype(weight.dtype), new_bias.astype(bias.dtype)


class TenantWriter:
    """Writes tenant version folders from one base model: its small graph and its shared weights file."""

    def __init__(self, base_folder: Path) -> None:
        self._weights = base_folder / WEIGHTS_FILENAME
        self._model = load_without_weights(base_folder / MODEL_FILENAME)
        base = read_initializers(self._model, HEAD_INITIALIZERS)
        self._weight, self._bias = (base[name] for name in HEAD_INITIALIZERS)
        self.copied = False
        """True once hard linking failed and the weights file was copied instead."""

    def write(self, version_folder: Path, index: int) -> None:
        """version_folder/model.onnx with tenant `index`'s head, and a link to the shared weights."""
        weight, bias = tenant_head(self._weight, self._bias, index)
        set_initializers(self._model, dict(zip(HEAD_INITIALIZERS, (weight, bias), strict=True)))
        (version_folder / MODEL_FILENAME).write_bytes(self._model.SerializeToString())
        self.copied |= not link_or_copy(self._weights, version_folder / WEIGHTS_FILENAME)


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link target to source (one copy on disk); copy where links fail. True when linked."""
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(source, target)
        return False
    return True
