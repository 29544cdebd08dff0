"""SageMaker's wire shapes: media types, the target-model header, and TF-serving-like JSON bodies.

SageMaker clients send either a V2 body (JSON, or binary with its JSON header's length) or the
`{"instances": [...]}` / `{"inputs": ...}` bodies of TF Serving and SageMaker's own containers.
The latter are rewritten here into a V2 document and decoded by the V2 codec, so every tensor
check (datatypes, element counts, limits) is the same whichever shape a client uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import numpy as np
import orjson

from modelfleet.errors import BadRequest
from modelfleet.errors import NotAcceptable as NotAcceptable  # re-exported: raised by the shapes here
from modelfleet.errors import UnsupportedMediaType as UnsupportedMediaType
from modelfleet.protocol.documents import Document
from modelfleet.protocol.rest import Limits, decode_request, header_length, loads
from modelfleet.protocol.v2 import InferRequest, InferResponse, TensorSpec
from modelfleet.repository.names import check_model_name, is_model_name

TARGET_MODEL = "x-amzn-sagemaker-target-model"
JSON_TYPE = "application/json"
OCTET_TYPE = "application/octet-stream"
# SageMaker forwards only a few headers (not Inference-Header-Content-Length), so SageMaker's Triton
# container carries the JSON header's length in the media type; we read and write it the same way.
TRITON_BINARY_TYPE = "application/vnd.sagemaker-triton.binary+json"
_HEADER_SIZE_PARAM = "json-header-size"
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_SUPPORTED = (
    f"{JSON_TYPE}, {OCTET_TYPE} with Inference-Header-Content-Length, "
    f"or {TRITON_BINARY_TYPE};{_HEADER_SIZE_PARAM}=N"
)


class ModelDescription(Document, frozen=True, kw_only=True, rename="camel"):
    """A loaded model in the multi-model API: POST /models' answer, GET /models/{name}."""

    model_name: str
    model_url: str


class ModelList(Document, frozen=True, kw_only=True, rename="camel"):
    """GET /models: a page of loaded models, and the token of the next page when there is one."""

    models: list[ModelDescription]
    next_page_token: str | None = None


class Unloaded(Document, frozen=True, kw_only=True, rename="camel"):
    """DELETE /models/{name}'s answer."""

    model_name: str


class Answer(Enum):
    """How an invocation is answered: the V2 response, or TF-serving-like `{"predictions": ...}`."""

    V2 = "v2"
    PREDICTIONS = "predictions"


def _shown(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit and text.isprintable() else repr(text[:limit])


# -- media types -------------------------------------------------------------------------------------------


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; k=v` -> ('type/subtype', {k: v}), lower-cased, quotes stripped."""
    head, *params = value.split(";")
    parsed: dict[str, str] = {}
    for param in params:
        key, sep, val = param.partition("=")
        if sep:
            parsed[key.strip().lower()] = val.strip().strip('"')
    return head.strip().lower(), parsed


def json_header_length(
    content_type: str | None, inference_header: str | None, body_length: int
) -> int | None:
    """None for a JSON body, the JSON header's length for a binary V2 body; 415 for other types.

    A missing Content-Type is taken as JSON (curl and many SDKs leave it out); a binary body says
    its header length in Inference-Header-Content-Length or, SageMaker style, in the media type.
    """
    media, params = parse_media_type(content_type) if content_type else (JSON_TYPE, {})
    if media == JSON_TYPE:
        return header_length(inference_header, body_length)
    if media == TRITON_BINARY_TYPE:
        size = params.get(_HEADER_SIZE_PARAM, inference_header)
        if size is None:
            raise BadRequest(f"Content-Type {TRITON_BINARY_TYPE} needs the parameter {_HEADER_SIZE_PARAM}=N")
        return header_length(size, body_length)
    if media == OCTET_TYPE:
        if inference_header is None:
            raise BadRequest(f"a {OCTET_TYPE} body needs the Inference-Header-Content-Length header")
        return header_length(inference_header, body_length)
    raise UnsupportedMediaType(f"Content-Type '{_shown(media)}' is not supported; send {_SUPPORTED}")


def require_json(content_type: str | None) -> None:
    """415 unless a control request's body is JSON (or says nothing about its type)."""
    if content_type and parse_media_type(content_type)[0] != JSON_TYPE:
        media = parse_media_type(content_type)[0]
        raise UnsupportedMediaType(f"Content-Type '{_shown(media)}' is not supported; send {JSON_TYPE}")


def acceptable(accept: str | None) -> tuple[bool, bool]:
    """(JSON answers acceptable, binary V2 answers acceptable) under an Accept header; 406 for neither."""
    if not accept or not accept.strip():
        return True, True
    json_ok = binary_ok = False
    for item in accept.split(","):
        media, params = parse_media_type(item)
        if params.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        if media in ("*/*", "application/*"):
            return True, True
        json_ok = json_ok or media == JSON_TYPE
        binary_ok = binary_ok or media in (OCTET_TYPE, TRITON_BINARY_TYPE)
    if not (json_ok or binary_ok):
        raise NotAcceptable(
            f"Accept '{_shown(accept, 100)}' allows none of {JSON_TYPE}, {TRITON_BINARY_TYPE}"
        )
    return json_ok, binary_ok


def binary_content_type(json_length: int) -> str:
    return f"{TRITON_BINARY_TYPE};{_HEADER_SIZE_PARAM}={json_length}"


# -- model names ---------------------------------------------------------------------------------------------


def target_model(value: str, known: Callable[[str], bool] | None = None) -> str:
    """The repository model an `X-Amzn-SageMaker-Target-Model` value names (400 for anything else).

    SageMaker sends the artefact's path relative to the endpoint's model prefix: `tenant-7.tar.gz`
    means the model `tenant-7`. One archive suffix is dropped and the rest must be a plain model
    name, so no value (`../x`, `a/b`, an absolute path) can reach outside the repository. A value
    that `known` says is a model as it is (an opaque name given to POST /models) is kept whole.
    """
    name = value.strip()
    if known is not None and is_model_name(name) and ".." not in name and known(name):
        return name
    lowered = name.lower()
    for suffix in _ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    try:
        return check_model_name(name)
    except BadRequest as exc:
        raise BadRequest(f"X-Amzn-SageMaker-Target-Model: {exc.message}") from None


# -- request bodies ------------------------------------------------------------------------------------------


def decode_invocation(
    body: bytes,
    json_length: int | None,
    inputs: Mapping[str, TensorSpec],
    batched: bool,
    limits: Limits,
) -> tuple[InferRequest, Answer]:
    """An invocation body -> the V2 request and how to answer it.

    A binary body, or a JSON body whose `inputs` is a list of V2 tensors, is a V2 request as is.
    `{"instances": [row, ...]}` and `{"inputs": tensor-or-object}` are mapped onto the model's
    inputs (`inputs`: name -> declared tensor; `batched`: the model has a batch dimension).
    """
    if json_length is not None:
        return decode_request(body, json_length, limits), Answer.V2
    doc = loads(body, limits.max_json_depth)
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object with 'instances' or 'inputs'")
    if "instances" in doc and "inputs" in doc:
        raise BadRequest("give either 'instances' (rows) or 'inputs' (columns), not both")
    if "instances" in doc:
        tensors = _from_rows(doc["instances"], inputs, batched, limits)
    elif "inputs" not in doc:
        raise BadRequest("request body needs 'instances' (rows), 'inputs' (columns) or V2 'inputs' tensors")
    elif _is_v2(doc["inputs"]):
        return decode_request(body, None, limits), Answer.V2
    else:
        tensors = _from_columns(doc["inputs"], inputs, limits)
    v2 = orjson.dumps({"inputs": tensors})
    return decode_request(v2, None, limits), Answer.PREDICTIONS


def _is_v2(value: Any) -> bool:
    """V2 tensors are objects with a datatype; TF-serving columns are values or a name -> value map."""
    return isinstance(value, list) and all(isinstance(t, dict) and "datatype" in t for t in value)


def _from_rows(
    rows: Any, inputs: Mapping[str, TensorSpec], batched: bool, limits: Limits
) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not rows:
        raise BadRequest("'instances' must be a non-empty list of rows")
    if not batched and len(rows) != 1:
        raise BadRequest(f"the model has no batch dimension: 'instances' must hold one row, not {len(rows)}")
    names = list(inputs)
    keyed = len(names) > 1 or all(isinstance(row, dict) for row in rows)
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for i, row in enumerate(rows):
        if not keyed:
            columns[names[0]].append(row)
            continue
        if not isinstance(row, dict):
            raise BadRequest(
                f"instance {i} must be an object keyed by input name {sorted(names)}, "
                f"since the model has {len(names)} inputs"
            )
        _check_keys(row, names, f"instance {i}")
        for name in names:
            columns[name].append(row[name])
    tensors = []
    for name, values in columns.items():
        data: Any = values if batched else values[0]
        shape = _regular_shape(data, name, limits)
        tensors.append({"name": name, "datatype": inputs[name].datatype, "shape": shape, "data": data})
    return tensors


def _from_columns(value: Any, inputs: Mapping[str, TensorSpec], limits: Limits) -> list[dict[str, Any]]:
    names = list(inputs)
    if len(names) == 1 and not isinstance(value, dict):
        value = {names[0]: value}
    if not isinstance(value, dict):
        raise BadRequest(
            f"'inputs' must be an object keyed by input name {sorted(names)}, "
            f"since the model has {len(names)} inputs"
        )
    _check_keys(value, names, "'inputs'")
    return [
        {
            "name": name,
            "datatype": inputs[name].datatype,
            "shape": _regular_shape(value[name], name, limits),
            "data": value[name],
        }
        for name in names
    ]


def _check_keys(given: dict[str, Any], names: list[str], where: str) -> None:
    missing = [n for n in names if n not in given]
    if missing:
        raise BadRequest(f"{where} has no input '{_shown(str(missing[0]))}'; the model takes {sorted(names)}")
    unknown = sorted(k for k in given if k not in names)
    if unknown:
        raise BadRequest(
            f"{where}: unknown input '{_shown(str(unknown[0]))}'; the model takes {sorted(names)}"
        )


def _regular_shape(data: Any, name: str, limits: Limits) -> list[int]:
    """The shape of nested lists, refused (400) when ragged or deeper than the rank limit.

    The V2 codec checks element counts, but a ragged list of strings can hold the right count, so
    regularity is checked here, level by level, before anything is allocated.
    """
    shape: list[int] = []
    level = [data]
    while isinstance(level[0], list):
        if len(shape) >= limits.max_rank:
            raise BadRequest(f"input '{name}': data is nested deeper than the limit of {limits.max_rank}")
        width = len(level[0])
        if any(not isinstance(item, list) or len(item) != width for item in level):
            raise BadRequest(f"input '{name}': data is ragged (rows of different lengths or depths)")
        shape.append(width)
        if width == 0:
            return shape
        level = [x for item in level for x in item]
    if any(isinstance(item, list) for item in level):
        raise BadRequest(f"input '{name}': data is ragged (rows of different lengths or depths)")
    return shape


# -- answers ------------------------------------------------------------------------------------------------


def encode_predictions(response: InferResponse, batched: bool) -> bytes:
    """`{"predictions": [...]}`: one entry per instance, the output's value for a single output or an
    object keyed by output name for several (a model without a batch dimension has one instance)."""
    values = {out.name: _jsonable(out.data, out.datatype) for out in response.outputs}
    if len(values) == 1:
        (value,) = values.values()
        predictions: Any = value if batched else [value]
    elif batched:
        rows = min((len(v) for v in values.values()), default=0)
        predictions = [{name: v[i] for name, v in values.items()} for i in range(rows)]
    else:
        predictions = [values]
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


def _jsonable(data: np.ndarray, datatype: str) -> Any:
    """Numeric arrays stay numpy (orjson writes them nested); BYTES become nested lists of text."""
    if datatype == "BYTES":
        text = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in data.ravel()]
        array = np.empty(len(text), dtype=object)
        array[:] = text
        return array.reshape(data.shape).tolist()
    return np.ascontiguousarray(data)
