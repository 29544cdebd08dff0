"""Adapters: a small head over a shared base model, applied to the base's output rows.

The head is `activation(x @ weight.T + bias)` with `weight` [out, in] and `bias` [out] from the
version's weights.json. Loading one is reading a few kilobytes; its requests run through the base
model's executor, batched with every other adapter's requests over the same base.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modelfleet.errors import ModelLoadError
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import HeadConfig
from modelfleet.runtimes.base import LoadSpec


class Head:
    """Implements the Runtime protocol for accounting and unloading; its work is `apply`."""

    may_run_inline = False  # never run by an executor: its base model's executor runs `apply`

    def __init__(
        self, config: HeadConfig, weight: np.ndarray, bias: np.ndarray, base_inputs: list[TensorSpec]
    ) -> None:
        self.config = config
        self.weight = np.asarray(weight, dtype=np.float32)  # the blob itself: no per-head copy
        self.bias = np.asarray(bias, dtype=np.float32)
        self.inputs = list(base_inputs)
        self.outputs = [TensorSpec(config.output, "FP32", (-1, weight.shape[0]))]
        self.nbytes = 0  # its weights are blobs, accounted once by the blob store

    def apply(self, base_outputs: list[np.ndarray]) -> list[np.ndarray]:
        logits = base_outputs[0] @ self.weight.T + self.bias
        if self.config.activation == "softmax":
            logits = np.exp(logits - logits.max(axis=-1, keepdims=True))
            logits /= logits.sum(axis=-1, keepdims=True)
        elif self.config.activation == "sigmoid":
            logits = 1.0 / (1.0 + np.exp(-logits))
        return [logits]

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError("an adapter runs through its base model's executor")

    def unload(self) -> None:
        pass


def load(spec: LoadSpec, base_inputs: list[TensorSpec], base_outputs: list[TensorSpec]) -> Head:
    head = spec.config.head
    if head is None:
        raise ModelLoadError("an adapter needs a head: {input: <base output>}")
    source = next((t for t in base_outputs if t.name == head.input), None)
    if source is None:
        raise ModelLoadError(
            f"head.input '{head.input}' is not an output of base model '{spec.config.base}' "
            f"(it has {[t.name for t in base_outputs]})"
        )
    missing = {"weight", "bias"} - set(spec.shared)
    if missing:
        raise ModelLoadError(
            f"weights.json must hold the head's 'weight' and 'bias' (missing {sorted(missing)})"
        )
    weight, bias = spec.shared["weight"], spec.shared["bias"]
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or source.shape[-1] not in (-1, weight.shape[1]):
        raise ModelLoadError(
            f"head weight {list(weight.shape)} and bias {list(bias.shape)} do not fit base output "
            f"'{head.input}' {list(source.shape)}: expected weight [out, {source.shape[-1]}] and bias [out]"
        )
    if len(source.shape) != 2:
        raise ModelLoadError(
            f"base output '{head.input}' must be [batch, features], it is {list(source.shape)}"
        )
    return Head(head, weight, bias, base_inputs)
