from pathlib import Path

import numpy as np
import pytest

from modelfleet.errors import BadRequest, ModelLoadError
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import Device, ModelConfig
from modelfleet.runtimes.base import LoadSpec, load_runtime
from modelfleet.runtimes.onnx import CPU, CUDA, providers_for
from tests.models import add_sub, identity, shared_matmul


def spec(path: Path, **config: object) -> LoadSpec:
    return LoadSpec("m", 1, path, ModelConfig(backend="onnxruntime", **config), default_intra_op_threads=1)  # type: ignore[arg-type]


def test_signature_comes_from_the_model_with_dynamic_dims_as_minus_one(tmp_path: Path) -> None:
    model = load_runtime(spec(add_sub(tmp_path / "model.onnx")))
    assert model.inputs == [TensorSpec("a", "INT64", (-1, 4)), TensorSpec("b", "INT64", (-1, 4))]
    assert model.outputs == [TensorSpec("sum", "INT64", (-1, 4)), TensorSpec("diff", "INT64", (-1, 4))]
    a = np.arange(8, dtype=np.int64).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.int64)
    diff, total = model.infer({"a": a, "b": b}, ["diff", "sum"])
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(diff, a - b)
    model.unload()


def test_only_a_cpu_session_may_run_on_the_event_loop(tmp_path: Path) -> None:
    model = load_runtime(spec(identity(tmp_path / "model.onnx"), device="cpu"))
    assert model.may_run_inline is True
    model.unload()


def test_a_session_reading_memory_mapped_blobs_never_runs_on_the_event_loop(tmp_path: Path) -> None:
    weight = np.ones((4, 4), np.float32)
    path = shared_matmul(tmp_path, "m", weight, np.zeros(4, np.float32))
    shared = {"W": np.memmap(tmp_path / "w.bin", np.float32, "w+", shape=(4, 4))}
    shared["W"][:] = weight
    model = load_runtime(LoadSpec("m", 1, path, ModelConfig(backend="onnxruntime"), 1, shared))
    (y,) = model.infer({"x": np.ones((1, 4), np.float32)}, ["y"])
    assert y.tolist() == [[4.0] * 4]  # the blob is used
    assert model.may_run_inline is False  # a page fault to disk must not stall the loop
    model.unload()


def test_string_tensors_accept_bytes(tmp_path: Path) -> None:
    model = load_runtime(spec(identity(tmp_path / "model.onnx", "BYTES", ("batch", 2))))
    assert model.inputs[0].datatype == "BYTES"
    (out,) = model.infer({"input": np.array([[b"ab", b"c"]], dtype=object)}, ["output"])
    assert out.tolist() == [["ab", "c"]]


def test_invalid_input_is_a_400_without_the_runtime_prefix(tmp_path: Path) -> None:
    model = load_runtime(spec(identity(tmp_path / "model.onnx")))
    with pytest.raises(BadRequest, match="model 'm' refused the input: Got invalid dimensions") as info:
        model.infer({"input": np.zeros((1, 3), np.float32)}, ["output"])
    assert "ONNXRuntimeError" not in str(info.value)


def test_load_errors_name_the_file_not_the_host_path(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(
        ModelLoadError, match="ONNX Runtime cannot load m/1/model.onnx: Protobuf parsing failed"
    ) as info:
        load_runtime(spec(bad))
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(ModelLoadError, match="version 1 has no model.onnx"):
        load_runtime(spec(tmp_path / "missing" / "model.onnx"))


def test_unknown_backend_is_a_load_error(tmp_path: Path) -> None:
    config = ModelConfig().model_copy(update={"backend": "tensorflow"})
    with pytest.raises(ModelLoadError, match="unknown backend 'tensorflow'; available: onnxruntime"):
        load_runtime(LoadSpec("m", 1, tmp_path, config, 1))


def test_providers_follow_the_device_setting() -> None:
    assert providers_for(Device.CPU, [CUDA, CPU]) == [CPU]
    assert providers_for(Device.AUTO, [CUDA, CPU]) == [CUDA, CPU]
    assert providers_for(Device.AUTO, [CPU]) == [CPU]
    assert providers_for(Device.CUDA, [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(ModelLoadError, match="device 'cuda' asked for, but ONNX Runtime has no CUDA"):
        providers_for(Device.CUDA, [CPU])


def test_runtime_messages_lose_source_locations_and_absolute_paths() -> None:
    from modelfleet.runtimes.onnx import clean_message

    raw = (
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Add node. "
        "Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/math/element_wise_ops.h:563 "
        "void onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) axis == 1 was false. 3 by 5"
    )
    assert clean_message(raw) == (
        "Non-zero status code returned while running Add node. Status Message: axis == 1 was false. 3 by 5"
    )
    assert clean_message('path does not exist: "/srv/models/.cache/b/1/shared.weights"') == (
        'path does not exist: "shared.weights"'
    )


def test_an_input_the_graph_cannot_compute_is_a_clean_400(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from tests.models import _save

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["m"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = load_runtime(spec(_save(graph, tmp_path / "model.onnx")))
    with pytest.raises(BadRequest, match="model 'm' could not run this input: Non-zero status code") as info:
        model.infer({"a": np.ones(3, np.float32), "b": np.ones(5, np.float32)}, ["y"])
    assert ".h:" not in str(info.value)
    assert "/onnxruntime_src" not in str(info.value)


def test_a_missing_external_data_file_is_named_relative_to_the_repository(tmp_path: Path) -> None:
    from tests.models import shared_matmul

    path = shared_matmul(tmp_path, "m", np.ones((4, 4), np.float32), np.zeros(4, np.float32))
    (path.parent / "shared.weights").unlink()
    with pytest.raises(ModelLoadError) as info:
        load_runtime(spec(path))
    assert str(tmp_path) not in str(info.value)
    assert "m/1/shared.weights" in str(info.value)


def _with_external_weight(folder: Path, location: str) -> Path:
    """y = x + W, W [4] stored as external data at `location` (relative to the model's folder)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros(4, np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))  # no checker: it would refuse these files itself
    return folder / "model.onnx"


@pytest.mark.parametrize("where", ["parent", "absolute", "dotted", "symlink"])
def test_external_data_outside_the_model_folder_is_never_read(tmp_path: Path, where: str) -> None:
    """The reason for the onnxruntime floor (pyproject): 1.23 read these files, 1.24.1 refuses."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    location = {
        "parent": "../../secret.bin",
        "absolute": str(secret),
        "dotted": "sub/../../../secret.bin",
        "symlink": "link.bin",
    }[where]
    (folder / "link.bin").symlink_to(secret)
    path = _with_external_weight(folder, location)
    with pytest.raises(ModelLoadError, match="External data path|external data") as failed:
        load_runtime(spec(path))
    assert str(tmp_path) not in str(failed.value)


def test_external_data_inside_the_model_folder_loads(tmp_path: Path) -> None:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    model = load_runtime(spec(_with_external_weight(folder, "w.bin")))
    assert model.infer({"x": np.zeros(4, np.float32)}, ["y"])[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    model.unload()


def test_a_tensorrt_model_on_device_cuda_without_the_provider_is_a_clear_load_error(tmp_path: Path) -> None:
    """This ONNX Runtime (the CPU build) has no TensorRT provider: the load names it, nothing is made."""
    path = identity(tmp_path / "1" / "model.onnx")
    trt = {"tensorrt": {"fp16": True}}
    with pytest.raises(ModelLoadError, match="need ONNX Runtime's TensorrtExecutionProvider"):
        load_runtime(spec(path, device="cuda", onnxruntime=trt))
    assert not (tmp_path / "1" / "trt-engines").exists()


def test_a_tensorrt_model_on_device_auto_falls_back_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = identity(tmp_path / "1" / "model.onnx")
    with caplog.at_level("WARNING", logger="modelfleet.runtimes.onnx"):
        model = load_runtime(spec(path, device="auto", onnxruntime={"tensorrt": {"fp16": True}}))
    assert model.providers == [CPU]  # type: ignore[attr-defined]
    (out,) = model.infer({"input": np.ones((1, 16), np.float32)}, ["output"])
    assert out.tolist() == [[1.0] * 16]
    assert [r.getMessage() for r in caplog.records] == [
        "model m/1: onnxruntime.tensorrt asked for, but TensorrtExecutionProvider is absent: running on the CPU"
    ]
    model.unload()
