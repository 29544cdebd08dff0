from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.compile.errors import Unsupported
from modelfleet.compile.targets import (
    Format,
    Precision,
    Target,
    check_available,
    check_supported,
    cpu_description,
    cpu_flags,
    has_fast_bf16,
    resolve_format,
)


def test_the_table_of_targets_formats_and_precisions() -> None:
    check_supported(Target.CPU, Precision.INT8, Format.ONNX)
    check_supported(Target.CPU, Precision.BF16, Format.TORCHSCRIPT)
    with pytest.raises(
        Unsupported, match=r"target cpu cannot run bf16 as onnx; it offers fp32 \(onnx\), int8"
    ):
        check_supported(Target.CPU, Precision.BF16, Format.ONNX)
    with pytest.raises(Unsupported, match="cannot run fp16"):
        check_supported(Target.CPU, Precision.FP16, Format.ONNX)
    with pytest.raises(Unsupported, match="target tensorrt produces onnx, not torchscript"):
        check_supported(Target.TENSORRT, Precision.FP16, Format.TORCHSCRIPT)
    assert resolve_format(Target.CPU, Precision.BF16, None) == Format.TORCHSCRIPT
    assert resolve_format(Target.CPU, Precision.INT8, None) == Format.ONNX
    assert resolve_format(Target.NEURON, Precision.FP32, None) == Format.TORCHSCRIPT
    assert Unsupported("x").exit_code == 2


def test_gpu_targets_need_a_provider_only_to_build_tensorrt_engines() -> None:
    check_available(Target.CUDA, providers=["CPUExecutionProvider"])  # made and gated on the CPU
    check_available(Target.TENSORRT, providers=["CPUExecutionProvider"])  # engines built on first load
    check_available(Target.CPU, providers=[])
    with pytest.raises(Unsupported, match="--build-engines needs ONNX Runtime's TensorrtExecutionProvider"):
        check_available(
            Target.TENSORRT, build_engines=True, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    with pytest.raises(Unsupported, match="--build-engines applies to target tensorrt, not cuda"):
        check_available(Target.CUDA, build_engines=True, providers=["TensorrtExecutionProvider"])
    check_available(Target.TENSORRT, build_engines=True, providers=["TensorrtExecutionProvider"])
    check_supported(Target.CUDA, Precision.FP16, Format.ONNX)
    check_supported(Target.TENSORRT, Precision.FP16, Format.ONNX)
    with pytest.raises(
        Unsupported, match=r"target cuda cannot run int8 as onnx; it offers fp32 \(onnx\), fp16"
    ):
        check_supported(Target.CUDA, Precision.INT8, Format.ONNX)


def test_neuron_needs_torch_neuronx_found_by_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Unsupported, match=r"AWS Neuron SDK \(torch_neuronx\), which is not installed here"):
        check_available(Target.NEURON)
    (tmp_path / "torch_neuronx").mkdir()  # a stand-in package: the check looks for the module only
    (tmp_path / "torch_neuronx" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    check_available(Target.NEURON)


def test_cpu_flags_and_bf16(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert {"avx2", "avx512_bf16"} <= cpu_flags(info)
    assert has_fast_bf16(cpu_flags(info))
    assert not has_fast_bf16({"avx2", "avx512f"})
    assert cpu_description(info) == "Test CPU; avx2 avx512f avx512_bf16"
    assert cpu_flags(tmp_path / "missing") == set()
