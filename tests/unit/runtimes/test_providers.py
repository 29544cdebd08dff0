"""Execution providers from a model's config and the providers this ONNX Runtime has (given, not
looked up): TensorRT options, the order, and what happens where a provider is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfleet.errors import ModelLoadError
from modelfleet.repository.config import Device, ModelConfig, TensorrtOptions
from modelfleet.runtimes.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderChoice,
    check_session,
    execution_providers,
    tensorrt_options,
)

GPU_BUILD = [TENSORRT, CUDA, CPU]


def trt_config(device: str = "cuda", **options: object) -> ModelConfig:
    return ModelConfig.model_validate({"device": device, "onnxruntime": {"tensorrt": options}})


def test_tensorrt_options_point_inside_the_version_folder(tmp_path: Path) -> None:
    options = TensorrtOptions(fp16=True, engine_cache="engines/a100", max_workspace_bytes=1 << 30)
    cache = str(tmp_path / "m" / "3" / "engines" / "a100")
    assert tensorrt_options(options, tmp_path / "m" / "3") == {
        "trt_fp16_enable": "True",
        "trt_max_workspace_size": str(1 << 30),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
    }
    assert tensorrt_options(TensorrtOptions(), tmp_path)["trt_fp16_enable"] == "False"
    for bad in ("/abs", "../out", "a/../../b"):
        with pytest.raises(ValueError, match="engine_cache must be a folder inside the version folder"):
            TensorrtOptions(engine_cache=bad)


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_a_tensorrt_model_runs_tensorrt_then_cuda_then_the_cpu(tmp_path: Path, device: str) -> None:
    choice = execution_providers(trt_config(device, fp16=True), tmp_path / "1", GPU_BUILD)
    assert choice.names == [TENSORRT, CUDA, CPU]
    assert choice.providers[0] == (TENSORRT, tensorrt_options(TensorrtOptions(fp16=True), tmp_path / "1"))
    assert choice.fallbacks == []


def test_device_cuda_demands_tensorrt_where_the_config_asks_for_it(tmp_path: Path) -> None:
    for present, missing in (([CUDA, CPU], TENSORRT), ([CPU], TENSORRT), ([TENSORRT, CPU], CUDA)):
        with pytest.raises(
            ModelLoadError, match=f"need ONNX Runtime's {missing}, which this installation lacks"
        ):
            execution_providers(trt_config("cuda"), tmp_path, present)
    with pytest.raises(ModelLoadError, match="or set device: auto to let the model run on CUDA or the CPU"):
        execution_providers(trt_config("cuda"), tmp_path, [CPU])


def test_device_auto_falls_back_and_says_so(tmp_path: Path) -> None:
    on_cuda = execution_providers(trt_config("auto"), tmp_path, [CUDA, CPU])
    assert on_cuda == ProviderChoice(
        [CUDA, CPU], [f"onnxruntime.tensorrt asked for, but {TENSORRT} is absent: running on CUDA"]
    )
    on_cpu = execution_providers(trt_config("auto"), tmp_path, ["AzureExecutionProvider", CPU])
    assert on_cpu.names == [CPU] and on_cpu.fallbacks[0].endswith("running on the CPU")


def test_without_tensorrt_options_the_device_alone_decides(tmp_path: Path) -> None:
    plain = ModelConfig(device=Device.AUTO)
    assert execution_providers(plain, tmp_path, GPU_BUILD).names == [CUDA, CPU]  # never TensorRT unasked
    assert execution_providers(plain, tmp_path, [CPU]).names == [CPU]
    assert execution_providers(ModelConfig(device=Device.CPU), tmp_path, GPU_BUILD).names == [CPU]
    with pytest.raises(ModelLoadError, match="device 'cuda' asked for, but ONNX Runtime has no CUDA"):
        execution_providers(ModelConfig(device=Device.CUDA), tmp_path, [CPU])
    with pytest.raises(ModelLoadError, match="device 'neuron' is for TorchScript models"):
        execution_providers(ModelConfig(device=Device.NEURON), tmp_path, GPU_BUILD)


def test_tensorrt_options_with_a_device_that_cannot_run_them_are_refused() -> None:
    for device in ("cpu", "neuron"):
        with pytest.raises(
            ValidationError, match=f"onnxruntime.tensorrt needs device cuda or auto, not {device}"
        ):
            trt_config(device)
    with pytest.raises(ValidationError, match="device neuron is for backend torchscript"):
        ModelConfig(backend="onnxruntime", device=Device.NEURON)


def test_a_session_without_the_provider_asked_for_fails_only_with_device_cuda() -> None:
    choice = ProviderChoice([(TENSORRT, {}), CUDA, CPU])
    assert check_session(choice, [TENSORRT, CUDA, CPU], Device.CUDA) == []
    with pytest.raises(ModelLoadError, match=f"ONNX Runtime did not enable {TENSORRT}"):
        check_session(choice, [CUDA, CPU], Device.CUDA)
    assert check_session(choice, [CPU], Device.AUTO) == [
        f"ONNX Runtime did not enable {TENSORRT} (the session runs on {CPU})"
    ]
