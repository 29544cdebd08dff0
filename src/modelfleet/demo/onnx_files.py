"""The ONNX files of the demo repository: the identity graph, weights kept in one external-data
file next to model.onnx, the inline initializers that tenants change, and the classifier without its head.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper, numpy_helper

MODEL_FILENAME = "model.onnx"
WEIGHTS_FILENAME = "encoder.weights"
"""External data of the encoder: a plain name, because ONNX Runtime refuses paths leaving the folder."""
HEAD_INITIALIZERS = ("head.weight", "head.bias")
"""The classifier head of minilm-sentiment: the only initializers that differ between tenants."""
OPSET = 17
IR_VERSION = 8  # readable by older ONNX Runtime builds too
IDENTITY_WIDTH = 16

# Large tensors start on a page boundary, which lets ONNX Runtime memory-map them.
_ALIGN_BYTES = 4096


def identity_model() -> onnx.ModelProto:
    """FP32 `input` [batch, 16] -> `output`, one Identity node: pure server overhead."""
    shape: list[str | int] = ["batch", IDENTITY_WIDTH]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="modelfleet"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save_with_external_weights(model: onnx.ModelProto, folder: Path, inline: Collection[str] = ()) -> None:
    """Write folder/model.onnx, moving every initializer not named in `inline` to folder/encoder.weights.

    Changes `model` in place: the moved initializers then refer to the weights file.
    """
    with (folder / WEIGHTS_FILENAME).open("wb") as weights:
        for tensor in model.graph.initializer:
            if tensor.name in inline or external_data_helper.uses_external_data(tensor):
                continue
            if not tensor.HasField("raw_data"):  # values held in typed fields (float_data, ...)
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
            raw = tensor.raw_data
            offset = weights.tell()
            if len(raw) >= _ALIGN_BYTES:
                offset = -(-offset // _ALIGN_BYTES) * _ALIGN_BYTES
                weights.write(b"\0" * (offset - weights.tell()))
            weights.write(raw)
            external_data_helper.set_external_data(tensor, WEIGHTS_FILENAME, offset, len(raw))
            tensor.ClearField("raw_data")
    (folder / MODEL_FILENAME).write_bytes(model.SerializeToString())


def without_head(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """A copy of the classifier up to its head's input: the features, renamed `output` [batch, width].

    The head is the one node reading HEAD_INITIALIZERS and writing the only graph output; it goes,
    with its initializers. Every other node and initializer is kept as it is.
    """
    base = onnx.ModelProto()
    base.CopyFrom(model)
    graph = base.graph
    heads = [n for n in graph.node if set(HEAD_INITIALIZERS) & set(n.input)]
    if len(heads) != 1 or [o.name for o in graph.output] != list(heads[0].output):
        raise ValueError(
            f"expected one head node reading {list(HEAD_INITIALIZERS)} and writing the graph output"
        )
    head = heads[0]
    features = head.input[0]
    width = int(next(t for t in graph.initializer if t.name == HEAD_INITIALIZERS[0]).dims[1])  # [out, in]
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    graph.node.remove(head)
    for name in HEAD_INITIALIZERS:
        graph.initializer.remove(next(t for t in graph.initializer if t.name == name))
    for node in graph.node:
        node.input[:] = [output if i == features else i for i in node.input]
        node.output[:] = [output if o == features else o for o in node.output]
    for info in graph.value_info:
        if info.name == features:
            info.name = output
    dims: list[str | int] = [batch.dim_param or batch.dim_value, width]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, dims))
    return base


def load_without_weights(path: Path) -> onnx.ModelProto:
    """The graph and its inline initializers; external ones keep pointing at their file."""
    return onnx.load(str(path), load_external_data=False)


def read_weights(model: onnx.ModelProto, folder: Path | None = None) -> dict[str, np.ndarray]:
    """Every initializer's value by name, inline or in a weights file in `folder` (memory-mapped,
    read-only). Unlike onnx.load, this reads a weights file with several hard links, as in a
    repository copied with `cp -al`: ours, written by `save_with_external_weights`.
    """
    files: dict[str, np.ndarray] = {}
    values = {}
    for tensor in model.graph.initializer:
        if not external_data_helper.uses_external_data(tensor):
            values[tensor.name] = numpy_helper.to_array(tensor)
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        if folder is None or Path(info.location).name != info.location:
            raise ValueError(
                f"initializer '{tensor.name}' is in {info.location!r}, not a weights file in a known folder"
            )
        if info.location not in files:
            files[info.location] = np.memmap(folder / info.location, dtype=np.uint8, mode="r")
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        start = int(info.offset or 0)
        length = int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize
        data = files[info.location][start : start + length]
        if len(data) != length:
            raise ValueError(f"initializer '{tensor.name}' does not fit in {info.location}")
        values[tensor.name] = data.view(dtype).reshape(tuple(tensor.dims))
    return values


def read_initializers(model: onnx.ModelProto, names: Collection[str]) -> dict[str, np.ndarray]:
    """The values of inline initializers by name; ValueError when one is missing or external."""
    found = {t.name: t for t in model.graph.initializer if t.name in names}
    _check_present(found, names)
    external = sorted(n for n, t in found.items() if external_data_helper.uses_external_data(t))
    if external:
        raise ValueError(f"initializer(s) {external} are stored as external data, not inline")
    return {name: numpy_helper.to_array(tensor) for name, tensor in found.items()}


def set_initializers(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> None:
    """Replace initializers in place by inline values of the same shape and dtype."""
    found = {t.name: t for t in model.graph.initializer if t.name in values}
    _check_present(found, values)
    for name, tensor in found.items():
        new = numpy_helper.from_array(np.ascontiguousarray(values[name]), name)
        if list(new.dims) != list(tensor.dims) or new.data_type != tensor.data_type:
            raise ValueError(
                f"initializer '{name}' is {_describe(tensor)} in the graph, the new value is {_describe(new)}"
            )
        tensor.CopyFrom(new)


def _check_present(found: Mapping[str, TensorProto], wanted: Collection[str]) -> None:
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"initializer(s) {missing} not in the graph")


def _describe(tensor: TensorProto) -> str:
    return f"{TensorProto.DataType.Name(tensor.data_type)} {list(tensor.dims)}"
