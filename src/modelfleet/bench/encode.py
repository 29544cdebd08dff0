"""Request bodies on the wire: V2 JSON tensors, or the binary tensor data extension.

Binary: a JSON header whose inputs carry `parameters.binary_data_size` and no `data`, followed by
the raw little-endian tensor bytes in input order; the header's length travels in the
`Inference-Header-Content-Length` HTTP header, and outputs are asked back as binary too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelfleet.bench.spec import Encoding
from modelfleet.bench.synth import Tensor
from modelfleet.protocol.datatypes import DATATYPES, serialize_bytes

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Body:
    """An encoded request body and the headers that describe it (besides Content-Length)."""

    content: bytes
    content_type: str
    header_length: int | None = None  # the JSON header's size, for binary bodies

    def headers(self) -> list[tuple[str, str]]:
        headers = [("Content-Type", self.content_type)]
        if self.header_length is not None:
            headers.append((HEADER_LENGTH, str(self.header_length)))
        return headers


def _raw(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)
    dtype = DATATYPES[tensor.datatype].dtype.newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def _json_data(tensor: Tensor) -> list[Any]:
    if tensor.datatype == "FP16":
        raise ValueError(f"input '{tensor.name}' is FP16, which V2 JSON cannot carry; use --encoding binary")
    flat = tensor.data.ravel()
    if tensor.datatype == "BYTES":
        return [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in flat]
    values: list[Any] = flat.tolist()
    return values


def json_body(tensors: list[Tensor], extra: dict[str, Any] | None = None) -> Body:
    """A V2 JSON request; `extra` holds other top-level fields (id, parameters, outputs)."""
    doc = dict(extra or {})
    doc["inputs"] = [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": _json_data(t)}
        for t in tensors
    ]
    return Body(orjson.dumps(doc), JSON_TYPE)


def binary_body(tensors: list[Tensor], extra: dict[str, Any] | None = None) -> Body:
    """A binary-extension request asking for binary outputs; `extra` as for `json_body`."""
    doc = dict(extra or {})
    raws = [_raw(t) for t in tensors]
    doc["inputs"] = [
        {
            "name": t.name,
            "datatype": t.datatype,
            "shape": list(t.shape),
            "parameters": {"binary_data_size": len(raw)},
        }
        for t, raw in zip(tensors, raws, strict=True)
    ]
    doc["parameters"] = {**doc.get("parameters", {}), "binary_data_output": True}
    header = orjson.dumps(doc)
    return Body(b"".join([header, *raws]), BINARY_TYPE, len(header))


def encode(tensors: list[Tensor], encoding: Encoding) -> Body:
    return json_body(tensors) if encoding is Encoding.JSON else binary_body(tensors)


def _tensor_from_json(item: Any) -> Tensor:
    try:
        name, datatype, shape, data = item["name"], item["datatype"], item["shape"], item["data"]
    except (KeyError, TypeError):
        raise ValueError(f"input file: every input needs name, datatype, shape and data: {item!r}") from None
    if datatype not in DATATYPES:
        raise ValueError(f"input file: input '{name}' has unknown datatype {datatype}")
    dtype = DATATYPES[datatype].dtype
    flat = np.asarray(data, dtype=object if datatype == "BYTES" else dtype).ravel()
    if datatype == "BYTES":
        flat = np.array([v.encode() if isinstance(v, str) else bytes(v) for v in flat], dtype=object)
    shape = tuple(int(d) for d in shape)
    if flat.size != int(np.prod(shape)):
        raise ValueError(f"input file: input '{name}' has {flat.size} values for shape {list(shape)}")
    return Tensor(str(name), str(datatype), flat.reshape(shape))


def body_from_file(raw: bytes, encoding: Encoding) -> Body:
    """A V2 JSON request body from a file: sent as is, or converted to the binary extension."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"input file is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ValueError("input file must be a V2 inference request: an object with an 'inputs' list")
    if encoding is Encoding.JSON:
        return Body(raw, JSON_TYPE)
    tensors = [_tensor_from_json(item) for item in doc["inputs"]]
    extra = {k: v for k, v in doc.items() if k != "inputs"}
    return binary_body(tensors, extra)
