"""Random but valid model inputs, synthesized from a model's V2 metadata.

Rules: a leading -1 dimension takes the batch size, other -1 dimensions the sequence length, and
`--shape NAME=...` replaces an input's whole shape. Integer inputs named like a mask are all ones,
token type ids are all zeros (BERT-style models only accept 0 / 1 there), other integers are drawn
from [0, 1000); floats are uniform in [0, 1), BOOL random, BYTES short random ASCII strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfleet.protocol.datatypes import DATATYPES

INT_HIGH = 1000
BYTES_LENGTH = 8
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """One declared input: -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Tensor:
    """A concrete input tensor, ready to encode."""

    name: str
    datatype: str
    data: np.ndarray  # shaped; an object array of bytes for BYTES

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


Signature = tuple[TensorMeta, ...]


def parse_signature(metadata: Mapping[str, Any], model: str) -> Signature:
    """The inputs of a `GET /v2/models/{name}` document; ValueError naming what is missing."""
    inputs = metadata.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ValueError(f"metadata of model '{model}' lists no inputs")
    signature = []
    for item in inputs:
        try:
            name, datatype, shape = item["name"], item["datatype"], tuple(int(d) for d in item["shape"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"metadata of model '{model}' has a malformed input: {item!r}") from None
        if datatype not in DATATYPES:
            raise ValueError(f"model '{model}' input '{name}' has unsupported datatype {datatype}")
        signature.append(TensorMeta(str(name), str(datatype), shape))
    return tuple(signature)


def concrete_shape(
    meta: TensorMeta, batch_size: int, seq_len: int, overrides: Mapping[str, tuple[int, ...]]
) -> tuple[int, ...]:
    """The shape to send for one input, following the module's rules."""
    override = overrides.get(meta.name)
    if override is not None:
        fits = len(override) == len(meta.shape) and all(
            d == -1 or d == o for d, o in zip(meta.shape, override, strict=True)
        )
        if not fits:
            raise ValueError(
                f"--shape {meta.name}={','.join(map(str, override))} does not fit the declared "
                f"shape {list(meta.shape)}"
            )
        return override
    return tuple(d if d >= 0 else batch_size if i == 0 else seq_len for i, d in enumerate(meta.shape))


def random_tensor(meta: TensorMeta, shape: tuple[int, ...], rng: np.random.Generator) -> Tensor:
    """Values for one input of the given concrete shape."""
    dtype = DATATYPES[meta.datatype].dtype
    lowered = meta.name.lower()
    if meta.datatype == "BYTES":
        count = int(np.prod(shape))
        letters = rng.choice(_LETTERS, size=(count, BYTES_LENGTH))
        data = np.empty(count, dtype=object)
        data[:] = [row.tobytes() for row in letters]
        return Tensor(meta.name, meta.datatype, data.reshape(shape))
    if meta.datatype == "BOOL":
        return Tensor(meta.name, meta.datatype, rng.random(shape) < 0.5)
    if dtype.kind == "f":
        return Tensor(meta.name, meta.datatype, rng.random(shape).astype(dtype))
    if "mask" in lowered:
        return Tensor(meta.name, meta.datatype, np.ones(shape, dtype=dtype))
    if "type_ids" in lowered:
        return Tensor(meta.name, meta.datatype, np.zeros(shape, dtype=dtype))
    high = min(INT_HIGH, int(np.iinfo(dtype).max) + 1)
    return Tensor(meta.name, meta.datatype, rng.integers(0, high, size=shape, dtype=dtype))


def random_inputs(
    signature: Signature,
    rng: np.random.Generator,
    batch_size: int = 1,
    seq_len: int = 16,
    overrides: Mapping[str, tuple[int, ...]] | None = None,
) -> list[Tensor]:
    """One random request's worth of inputs for a signature."""
    overrides = overrides or {}
    return [random_tensor(m, concrete_shape(m, batch_size, seq_len, overrides), rng) for m in signature]
