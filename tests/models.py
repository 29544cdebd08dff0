"""Tiny ONNX models generated for the tests (no model files live in git)."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from modelfleet.repository.weights import MANIFEST, SHARED_PLACEHOLDER, WeightsManifest, tensor_ref

_TYPES = {
    "FP32": TensorProto.FLOAT,
    "FP16": TensorProto.FLOAT16,
    "FP64": TensorProto.DOUBLE,
    "INT64": TensorProto.INT64,
    "INT32": TensorProto.INT32,
    "INT8": TensorProto.INT8,
    "UINT8": TensorProto.UINT8,
    "BOOL": TensorProto.BOOL,
    "BYTES": TensorProto.STRING,
}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelfleet-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def identity(path: Path, datatype: str = "FP32", shape: tuple[Any, ...] = ("batch", 16)) -> Path:
    """input -> output, unchanged."""
    t = _TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", t, list(shape))],
        [helper.make_tensor_value_info("output", t, list(shape))],
    )
    return _save(graph, path)


def add_sub(path: Path, datatype: str = "INT64", width: int = 4) -> Path:
    """a, b -> sum = a + b, diff = a - b; [batch, width]."""
    t = _TYPES[datatype]
    shape = ["batch", width]
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["diff"])],
        "add_sub",
        [helper.make_tensor_value_info("a", t, shape), helper.make_tensor_value_info("b", t, shape)],
        [helper.make_tensor_value_info("sum", t, shape), helper.make_tensor_value_info("diff", t, shape)],
    )
    return _save(graph, path)


def write_config(folder: Path, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def standard_repo(root: Path) -> Path:
    """identity (config), auto (no config), add_sub, strings, fixed (no batch dim), broken, two versions."""
    identity(root / "identity" / "1" / "model.onnx")
    write_config(
        root / "identity",
        {
            "backend": "onnxruntime",
            "max_batch_size": 8,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 16]}],
            "onnxruntime": {"intra_op_threads": 1},
        },
    )
    identity(root / "auto" / "1" / "model.onnx")
    add_sub(root / "add_sub" / "1" / "model.onnx")
    identity(root / "strings" / "1" / "model.onnx", "BYTES", ("batch", 2))
    identity(root / "half" / "1" / "model.onnx", "FP16", ("batch", 4))
    identity(root / "fixed" / "1" / "model.onnx", "FP32", (2, 3))
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    identity(root / "versioned" / "1" / "model.onnx", "FP32", ("batch", 2))
    identity(root / "versioned" / "2" / "model.onnx", "FP32", ("batch", 2))
    write_config(root / "versioned", {"version_policy": {"all": True}})
    return root


def shared_matmul(root: Path, name: str, weight: np.ndarray, bias: np.ndarray, version: int = 1) -> Path:
    """y = x @ weight + bias, [batch, n] -> [batch, m]; `weight` lives in the repository's blob
    store (weights.json + the empty shared.weights placeholder), `bias` inline in the model."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(weight.astype(np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", SHARED_PLACEHOLDER), ("offset", "0"), ("length", str(weight.nbytes))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    b = numpy_helper.from_array(bias.astype(np.float32), "B")
    n, m = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])],
        "shared_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", m])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    (folder / SHARED_PLACEHOLDER).write_bytes(b"")
    manifest = WeightsManifest(tensors={"W": tensor_ref(root, weight.astype(np.float32), "FP32")})
    (folder / MANIFEST).write_text(manifest.model_dump_json())
    return folder / "model.onnx"


def adapter(
    root: Path, name: str, base: str, weight: np.ndarray, bias: np.ndarray, head_input: str = "output"
) -> None:
    """A head over `base`: weights.json holding weight [out, in] and bias [out]."""
    write_config(
        root / name, {"backend": "adapter", "base": base, "head": {"input": head_input, "output": "logits"}}
    )
    folder = root / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = WeightsManifest(
        tensors={
            "weight": tensor_ref(root, weight.astype(np.float32), "FP32"),
            "bias": tensor_ref(root, bias.astype(np.float32), "FP32"),
        }
    )
    (folder / MANIFEST).write_text(manifest.model_dump_json())


SLOW_MODEL = """
import os
import time


class Model:
    def load(self, folder):
        pass

    def infer(self, inputs):
        fd = os.open(os.environ["SLOW_FIFO"], os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"x")  # a call is running (CallsBegun reads these)
        os.close(fd)
        time.sleep(float(inputs["x"][0, 0]))  # the work this model simulates: as long as asked
        return {"y": inputs["x"]}
"""


def slow_repo(root: Path) -> Path:
    """identity, and `slow`: a python model (needs --python-models and SLOW_FIFO set to a
    CallsBegun path) that runs as many seconds as its input [[x]] says, two calls side by side."""
    identity(root / "identity" / "1" / "model.onnx")
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    write_config(
        root / "slow",
        {
            "backend": "python",
            "max_batch_size": 0,
            "instances": 2,  # one call per front, side by side
            "warmup": {"runs": 0},  # every signal is a call of the caller's
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 1]}],
        },
    )
    return root


class CallsBegun:
    """A FIFO the slow model writes one byte to as each of its calls begins, in a server process:
    `wait(n)` blocks until n calls have begun (an event across processes, no polling)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # a reader from now on: writers never block
        self.count = 0

    def wait(self, n: int, timeout_s: float = 20.0) -> int:
        """The number of calls begun, once it is n (or the timeout has passed)."""
        deadline = time.monotonic() + timeout_s
        while self.count < n and (left := deadline - time.monotonic()) > 0:
            if select.select([self._fd], [], [], left)[0]:
                self.count += len(os.read(self._fd, 64))
        return self.count

    def close(self) -> None:
        os.close(self._fd)
