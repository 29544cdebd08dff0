"""ModelInferRequest <-> InferRequest, InferResponse -> ModelInferResponse, and the control answers.

The same checks as the REST codec, with the same limits (input count, rank, element count, byte
sizes) and messages naming the field: `raw_input_contents` (one entry per input, in input order)
or typed `contents`, never both. Raw inputs become numpy views of the received bytes (no copy);
answers are always raw (`raw_output_contents`), as Triton sends them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
from google.protobuf import json_format

from modelfleet.errors import BadRequest
from modelfleet.protocol.datatypes import Datatype, datatype, deserialize_bytes, serialize_bytes
from modelfleet.protocol.documents import (
    Duration,
    IndexEntry,
    ModelConfiguration,
    ModelMetadata,
    ModelStatistics,
    ServerMetadata,
    Statistics,
)
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc import model_config_pb2 as mc
from modelfleet.protocol.rest import Limits, checked_shape
from modelfleet.protocol.v2 import InferInput, InferRequest, InferResponse, RequestedOutput, check_parameters

# datatype -> (InferTensorContents field, numpy dtype of that field); FP16 travels raw only.
_CONTENTS: dict[str, tuple[str, type[np.generic]]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", np.object_),
}
_Output = pb.ModelInferResponse.InferOutputTensor
_Tensor = pb.ModelMetadataResponse.TensorMetadata
_Index = pb.RepositoryIndexResponse.ModelIndex


def parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf parameter map (InferParameter or ModelRepositoryParameter values) as a dict."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    return out


def set_parameters(target: Any, params: Mapping[str, Any]) -> None:
    """Fill a map<string, InferParameter> from a dict (values that are no scalar become strings)."""
    for key, value in params.items():
        entry = target[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            entry.int64_param = value
        elif isinstance(value, float):
            entry.double_param = value
        else:
            entry.string_param = str(value)


def decode_infer_request(message: pb.ModelInferRequest, limits: Limits) -> InferRequest:
    """A parsed ModelInferRequest -> InferRequest with shaped numpy arrays (400 naming the problem)."""
    tensors = message.inputs
    if len(tensors) > limits.max_inputs:
        raise BadRequest(f"request has {len(tensors)} inputs, the limit is {limits.max_inputs}")
    if len(message.outputs) > limits.max_inputs:
        raise BadRequest(f"request asks for {len(message.outputs)} outputs, the limit is {limits.max_inputs}")
    params = parameters(message.parameters) if message.parameters else {}
    check_parameters(params, "request")
    raw = message.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; "
            "give one per input, in input order"
        )
    inputs = []
    for index, tensor in enumerate(tensors):
        where = f"input '{tensor.name}'"
        if not tensor.name:
            raise BadRequest(f"input {index} has no name")
        tensor_params = parameters(tensor.parameters) if tensor.parameters else {}
        check_parameters(tensor_params, where, tensor=True)
        dt = datatype(tensor.datatype)
        shape = checked_shape(list(tensor.shape), where, limits)
        count = math.prod(shape)
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(f"{where}: give either 'contents' or raw_input_contents, not both")
            array = _from_raw(raw[index], dt, shape, count, f"{where} (raw_input_contents[{index}])")
        elif tensor.HasField("contents"):
            array = _from_contents(tensor.contents, dt, shape, count, where)
        elif count == 0:
            array = np.empty(shape, dtype=dt.dtype)
        else:
            raise BadRequest(f"{where}: no 'contents' and no raw_input_contents")
        inputs.append(InferInput(tensor.name, dt.name, shape, array, tensor_params))
    outputs = None
    if message.outputs:
        outputs = []
        for out in message.outputs:
            out_params = parameters(out.parameters) if out.parameters else {}
            check_parameters(out_params, f"output '{out.name}'", tensor=True)
            outputs.append(RequestedOutput(out.name, out_params))
    return InferRequest(inputs, outputs, message.id or None, params)


def _from_raw(raw: bytes, dt: Datatype, shape: tuple[int, ...], count: int, where: str) -> np.ndarray:
    if dt.is_bytes:
        return deserialize_bytes(raw, count, where).reshape(shape)
    expected = count * dt.itemsize
    if len(raw) != expected:
        raise BadRequest(
            f"{where}: {len(raw)} bytes, but shape {list(shape)} of {dt.name} needs {expected} bytes"
        )
    return np.frombuffer(raw, dtype=dt.dtype).reshape(shape)


def _from_contents(
    contents: pb.InferTensorContents, dt: Datatype, shape: tuple[int, ...], count: int, where: str
) -> np.ndarray:
    if dt.name not in _CONTENTS:
        raise BadRequest(f"{where}: {dt.name} data must be sent in raw_input_contents")
    field, wide = _CONTENTS[dt.name]
    values = getattr(contents, field)
    if len(values) != count:
        raise BadRequest(
            f"{where}: {dt.name} data goes in contents.{field}, which has {len(values)} elements; "
            f"shape {list(shape)} needs {count}"
        )
    if dt.is_bytes:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    data = np.array(values, dtype=wide)
    if dt.dtype != data.dtype and count:
        info = np.iinfo(dt.dtype)
        if data.min() < info.min or data.max() > info.max:
            raise BadRequest(f"{where}: values must lie in [{info.min}, {info.max}] for {dt.name}")
    return data.astype(dt.dtype, copy=False).reshape(shape)


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    """InferResponse -> ModelInferResponse with every output in raw_output_contents."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
        outputs=[_Output(name=o.name, datatype=o.datatype, shape=o.shape) for o in response.outputs],
        raw_output_contents=[
            serialize_bytes(o.data) if o.datatype == "BYTES" else np.ascontiguousarray(o.data).tobytes()
            for o in response.outputs
        ],
    )
    if response.parameters:
        set_parameters(message.parameters, response.parameters)
    return message


# -- control-plane answers: the data plane's documents as messages ------------------------------------


def server_metadata(doc: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=doc.name, version=doc.version, extensions=doc.extensions)


def model_metadata(doc: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=doc.name,
        versions=doc.versions,
        platform=doc.platform,
        inputs=[_Tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in doc.inputs],
        outputs=[_Tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in doc.outputs],
    )


def model_config(doc: ModelConfiguration) -> pb.ModelConfigResponse:
    config = json_format.ParseDict(msgspec.to_builtins(doc), mc.ModelConfig(), ignore_unknown_fields=True)
    return pb.ModelConfigResponse(config=config)


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def _model_statistics(s: ModelStatistics) -> pb.ModelStatistics:
    i = s.inference_stats
    return pb.ModelStatistics(
        name=s.name,
        version=s.version,
        last_inference=s.last_inference,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(i.success),
            fail=_duration(i.fail),
            queue=_duration(i.queue),
            compute_input=_duration(i.compute_input),
            compute_infer=_duration(i.compute_infer),
            compute_output=_duration(i.compute_output),
            cache_hit=_duration(i.cache_hit),
            cache_miss=_duration(i.cache_miss),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=b.batch_size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for b in s.batch_stats
        ],
    )


def statistics(doc: Statistics) -> pb.ModelStatisticsResponse:
    """The statistics document; modelfleet's own additions (residency, memory) have no field in
    the message and are left out: they stay on the HTTP answer and /metrics."""
    return pb.ModelStatisticsResponse(model_stats=[_model_statistics(s) for s in doc.model_stats])


def repository_index(entries: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[_Index(name=e.name, version=e.version or "", state=e.state, reason=e.reason) for e in entries]
    )
