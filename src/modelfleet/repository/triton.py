"""Triton's `config.pbtxt` read into our ModelConfig, for repositories written for Triton.

The fields that map: name, platform / backend, max_batch_size, input / output (dims without the
batch dimension when max_batch_size > 0), dynamic_batching (preferred sizes, queue delay),
instance_group (count -> instances, KIND_GPU -> device cuda), version_policy, default_model_filename
and ensemble_scheduling steps. Fields with no counterpart are listed in `TritonConfig.ignored`
rather than silently dropped. The text format is parsed here (a small subset of protobuf text
format: scalars, strings, nested messages, lists), so no protobuf dependency is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelfleet.repository.config import ModelConfig, format_validation_error

CONFIG_PBTXT = "config.pbtxt"
_PLATFORMS = {
    "onnxruntime_onnx": "onnxruntime",
    "onnxruntime": "onnxruntime",
    "pytorch_libtorch": "torchscript",
    "pytorch": "torchscript",
    "python": "python",
    "ensemble": "ensemble",
}
_TYPES = {
    "TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}  # fmt: skip
_MAPPED = {
    "name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching",
    "instance_group", "version_policy", "default_model_filename", "ensemble_scheduling",
}  # fmt: skip
_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}\[\]:,;<>])|([^\s{}\[\]:,;<>"\']+))'
)


class TritonConfigError(ValueError):
    """config.pbtxt cannot be read or has no counterpart here; the message says which field."""


@dataclass
class TritonConfig:
    config: ModelConfig
    ignored: list[str] = field(default_factory=list)
    """Top-level fields with no counterpart in config.yaml (e.g. optimization, parameters)."""


def parse_pbtxt(text: str) -> dict[str, Any]:
    """Protobuf text format -> nested dicts; a repeated field (or a [list]) becomes a list."""
    tokens = [t for t in _tokens(text)]
    message, end = _message(tokens, 0, closing=None)
    if end != len(tokens):
        raise TritonConfigError(f"unexpected '{tokens[end]}' at the top level")
    return message


def read_triton_config(text: str, folder_name: str) -> TritonConfig:
    raw = parse_pbtxt(text)
    ignored = sorted(k for k in raw if k not in _MAPPED)
    platform = str(_one(raw, "backend") or _one(raw, "platform") or "")
    backend = _PLATFORMS.get(platform)
    if backend is None:
        raise TritonConfigError(
            f"platform/backend '{platform}' has no runtime here; served: {', '.join(sorted(set(_PLATFORMS)))}"
        )
    max_batch = int(_one(raw, "max_batch_size") or 0)
    fields: dict[str, Any] = {"backend": backend, "max_batch_size": max_batch}
    name = _one(raw, "name")
    if name:
        fields["name"] = str(name)
    if _one(raw, "default_model_filename"):
        fields["filename"] = str(_one(raw, "default_model_filename"))
    for kind, key in (("input", "inputs"), ("output", "outputs")):
        if kind in raw:
            fields[key] = [_tensor(t, max_batch) for t in _many(raw, kind)]
    batching = _one(raw, "dynamic_batching")
    if isinstance(batching, dict):
        fields["dynamic_batching"] = {
            "preferred_batch_sizes": sorted({int(s) for s in _many(batching, "preferred_batch_size")}),
            "max_queue_delay_us": int(_one(batching, "max_queue_delay_microseconds") or 0),
        }
    elif max_batch == 0:
        fields["dynamic_batching"] = {"enabled": False}
    groups = _many(raw, "instance_group")
    if groups:
        fields["instances"] = sum(int(_one(g, "count") or 1) for g in groups)
        kinds = {str(_one(g, "kind") or "KIND_AUTO") for g in groups}
        if kinds == {"KIND_GPU"}:
            fields["device"] = "cuda"
        elif kinds == {"KIND_CPU"}:
            fields["device"] = "cpu"
    policy = _one(raw, "version_policy")
    if isinstance(policy, dict):
        fields["version_policy"] = _policy(policy)
    scheduling = _one(raw, "ensemble_scheduling")
    if isinstance(scheduling, dict):
        fields["steps"] = [_step(s) for s in _many(scheduling, "step")]
    if backend == "ensemble" and max_batch == 0:
        fields.pop("dynamic_batching", None)
    try:
        config = ModelConfig.model_validate(fields)
    except ValidationError as exc:
        raise TritonConfigError(f"{CONFIG_PBTXT}: {format_validation_error(exc)}") from None
    if config.name is not None and config.name != folder_name:
        raise TritonConfigError(
            f"{CONFIG_PBTXT}: name '{config.name}' differs from the folder name '{folder_name}'"
        )
    return TritonConfig(config, ignored)


def _tensor(raw: dict[str, Any], max_batch: int) -> dict[str, Any]:
    datatype = _TYPES.get(str(_one(raw, "data_type") or ""))
    if datatype is None:
        raise TritonConfigError(
            f"tensor '{_one(raw, 'name')}': data_type {_one(raw, 'data_type')} is not served"
        )
    dims = [int(d) for d in _many(raw, "dims")]
    return {
        "name": str(_one(raw, "name")),
        "datatype": datatype,
        "shape": ([-1] if max_batch > 0 else []) + dims,
    }


def _policy(raw: dict[str, Any]) -> dict[str, Any]:
    if "all" in raw:
        return {"all": True}
    if "specific" in raw:
        return {"specific": [int(v) for v in _many(_one(raw, "specific"), "versions")]}
    latest = _one(raw, "latest")
    return {"latest": int(_one(latest, "num_versions") or 1) if isinstance(latest, dict) else 1}


def _step(raw: dict[str, Any]) -> dict[str, Any]:
    version = int(_one(raw, "model_version") or -1)
    return {
        "model": str(_one(raw, "model_name")),
        "version": str(version) if version >= 0 else None,
        "inputs": {str(_one(m, "key")): str(_one(m, "value")) for m in _many(raw, "input_map")},
        "outputs": {str(_one(m, "key")): str(_one(m, "value")) for m in _many(raw, "output_map")},
    }


def _many(raw: Any, key: str) -> list[Any]:
    value = raw.get(key, []) if isinstance(raw, dict) else []
    return value if isinstance(value, list) else [value]


def _one(raw: Any, key: str) -> Any:
    values = _many(raw, key)
    return values[-1] if values else None


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip():
                raise TritonConfigError(f"cannot read config.pbtxt near '{text[position : position + 20]}'")
            break
        position = match.end()
        if match.group(1) is None and match.group(0).strip():
            tokens.append(match.group(0).strip())
    return tokens


def _message(tokens: list[str], i: int, closing: str | None) -> tuple[dict[str, Any], int]:
    message: dict[str, Any] = {}
    while i < len(tokens) and tokens[i] != closing:
        key = tokens[i]
        if not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            raise TritonConfigError(f"expected a field name, found '{key}'")
        i += 1
        if i < len(tokens) and tokens[i] == ":":
            i += 1
        if i >= len(tokens):
            raise TritonConfigError(f"field '{key}' has no value")
        value, i = _value(tokens, i)
        if key in message:
            existing = message[key]
            message[key] = (
                [*existing, *value]
                if isinstance(value, list) and isinstance(existing, list)
                else ([*existing, value] if isinstance(existing, list) else [existing, value])
            )
        else:
            message[key] = value
        if i < len(tokens) and tokens[i] in (",", ";"):
            i += 1
    if closing is not None:
        if i >= len(tokens):
            raise TritonConfigError(f"a message is not closed with '{closing}'")
        i += 1
    return message, i


def _value(tokens: list[str], i: int) -> tuple[Any, int]:
    token = tokens[i]
    if token in ("{", "<"):
        return _message(tokens, i + 1, "}" if token == "{" else ">")
    if token == "[":
        items: list[Any] = []
        i += 1
        while i < len(tokens) and tokens[i] != "]":
            item, i = _value(tokens, i)
            items.append(item)
            if i < len(tokens) and tokens[i] == ",":
                i += 1
        if i >= len(tokens):
            raise TritonConfigError("a list is not closed with ']'")
        return items, i + 1
    return _scalar(token), i + 1


def _scalar(token: str) -> Any:
    if token[0] in "\"'":
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", token):
        return float(token)
    if token in ("true", "false"):
        return token == "true"
    return token  # an enum name such as TYPE_FP32 or KIND_GPU
