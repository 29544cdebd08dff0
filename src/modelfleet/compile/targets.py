"""What each target can produce: formats and precisions, and whether its SDK or device is here.

    target     format        precisions     needs
    cpu        onnx          fp32, int8     ONNX Runtime (always installed)
    cpu        torchscript   fp32, bf16     torch; bf16 is fast only with AVX-512 BF16 or AMX
    cuda       onnx          fp32, fp16     nothing to compile (gated on this CPU); a GPU and
                                            onnxruntime-gpu to serve
    tensorrt   onnx          fp32, fp16     as cuda; ONNX Runtime's TensorRT provider and a GPU
                                            only to build the engines now (--build-engines)
    neuron     torchscript   fp32, bf16     torch_neuronx (AWS Neuron SDK) on an Inferentia/Trainium host

A combination outside the table, or a target whose SDK is absent, is refused (Unsupported, exit 2)
before any work is done: nothing is pretended.
"""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from pathlib import Path

from modelfleet.compile.errors import Unsupported


class Target(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"
    NEURON = "neuron"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class Format(StrEnum):
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"


SUPPORTED: dict[tuple[Target, Format], tuple[Precision, ...]] = {
    (Target.CPU, Format.ONNX): (Precision.FP32, Precision.INT8),
    (Target.CPU, Format.TORCHSCRIPT): (Precision.FP32, Precision.BF16),
    (Target.CUDA, Format.ONNX): (Precision.FP32, Precision.FP16),
    (Target.TENSORRT, Format.ONNX): (Precision.FP32, Precision.FP16),
    (Target.NEURON, Format.TORCHSCRIPT): (Precision.FP32, Precision.BF16),
}
DEFAULT_FORMAT = {
    Target.CPU: Format.ONNX,
    Target.CUDA: Format.ONNX,
    Target.TENSORRT: Format.ONNX,
    Target.NEURON: Format.TORCHSCRIPT,
}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
TENSORRT_PROVIDER = "TensorrtExecutionProvider"


def resolve_format(target: Target, precision: Precision, fmt: Format | None) -> Format:
    """The output format: the one asked for, else bf16 -> TorchScript, else the target's default."""
    if fmt is None:
        fmt = Format.TORCHSCRIPT if precision == Precision.BF16 else DEFAULT_FORMAT[target]
    return fmt


def check_supported(target: Target, precision: Precision, fmt: Format) -> None:
    """Unsupported naming what the target can do, when it cannot do this."""
    precisions = SUPPORTED.get((target, fmt))
    if precisions is None:
        formats = [f.value for (t, f) in SUPPORTED if t == target]
        raise Unsupported(f"target {target} produces {' or '.join(formats)}, not {fmt}")
    if precision not in precisions:
        offered = ", ".join(f"{p} ({f})" for (t, f), ps in SUPPORTED.items() if t == target for p in ps)
        raise Unsupported(f"target {target} cannot run {precision} as {fmt}; it offers {offered}")


def check_available(target: Target, build_engines: bool = False, providers: list[str] | None = None) -> None:
    """Unsupported when what the compile must run is absent here, saying what is missing: Neuron's
    SDK for neuron; the TensorRT provider when TensorRT engines are to be built now. A cuda or
    tensorrt model is otherwise made and gated on the CPU (the report says so)."""
    if target == Target.NEURON:
        if importlib.util.find_spec("torch_neuronx") is None:
            raise Unsupported(
                "target neuron needs the AWS Neuron SDK (torch_neuronx), which is not installed here; "
                "compile on an Inferentia or Trainium instance with the Neuron PyTorch packages"
            )
        return
    if not build_engines:
        return
    if target != Target.TENSORRT:
        raise Unsupported(f"--build-engines applies to target tensorrt, not {target}")
    if providers is None:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    if TENSORRT_PROVIDER not in providers:
        raise Unsupported(
            f"--build-engines needs ONNX Runtime's {TENSORRT_PROVIDER}, which this installation lacks "
            f"(it has {', '.join(providers)}); install onnxruntime-gpu with TensorRT on a machine with an "
            "NVIDIA GPU, or leave out --build-engines: the engines are then built on the first load"
        )


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty when /proc/cpuinfo is unreadable, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX), not by emulation."""
    found = cpu_flags() if flags is None else flags
    return any(flag in found for flag in _BF16_FLAGS)


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """'<model name>; avx512_vnni avx512_bf16 amx_bf16' (the flags that set int8 / bf16 speed)."""
    name = "unknown CPU"
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    flags = cpu_flags(cpuinfo)
    return f"{name}; {' '.join(f for f in wanted if f in flags) or 'no AVX-512'}"
