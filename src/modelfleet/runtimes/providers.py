"""Which ONNX Runtime execution providers a model runs on, from its config and what this ONNX
Runtime has: TensorRT (with the options `modelfleet compile --target tensorrt` writes), CUDA, CPU.

    device    onnxruntime.tensorrt   provider absent here
    cpu       (refused by the config)  -
    cuda      set                    TensorRT or CUDA absent: load error
    cuda      unset                  CUDA absent: load error
    auto      set                    TensorRT absent: CUDA, else the CPU, with a warning logged
    auto      unset                  CUDA absent: the CPU

`device: cuda` is a demand (a model compiled for TensorRT fp16 silently run elsewhere would be
several times slower than planned); `device: auto` asks for the best that is here. Pure, apart
from asking ONNX Runtime what it has when not told.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelfleet.errors import ModelLoadError
from modelfleet.repository.config import Device, ModelConfig, TensorrtOptions

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

Provider = str | tuple[str, dict[str, str]]
"""As InferenceSession(providers=...) takes them: a name, or a name and its options."""


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    providers: list[Provider]
    fallbacks: list[str] = field(default_factory=list)
    """What the config asked for and this ONNX Runtime lacks (device auto), to be logged."""

    @property
    def names(self) -> list[str]:
        return [p if isinstance(p, str) else p[0] for p in self.providers]


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def tensorrt_options(options: TensorrtOptions, version_dir: Path) -> dict[str, str]:
    """The TensorRT provider's options (strings, as ONNX Runtime takes them) for a model whose
    version folder is `version_dir`: the engine and timing caches live in its cache folder."""
    cache = str(version_dir / options.engine_cache)
    return {
        "trt_fp16_enable": str(options.fp16),
        "trt_max_workspace_size": str(options.max_workspace_bytes),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
    }


def tensorrt_chain(options: TensorrtOptions, version_dir: Path) -> list[Provider]:
    """TensorRT first; CUDA then the CPU for the operators TensorRT does not take."""
    return [(TENSORRT, tensorrt_options(options, version_dir)), CUDA, CPU]


def execution_providers(
    config: ModelConfig, version_dir: Path, available: Sequence[str] | None = None
) -> ProviderChoice:
    """The providers for a model of this config whose files are in `version_dir`."""
    present = available_providers() if available is None else list(available)
    trt = config.onnxruntime.tensorrt
    if trt is None or config.device in (Device.CPU, Device.NEURON):
        return ProviderChoice(list(providers_for(config.device, present)))
    if TENSORRT in present and CUDA in present:
        return ProviderChoice(tensorrt_chain(trt, version_dir))
    missing = TENSORRT if TENSORRT not in present else CUDA
    if config.device == Device.CUDA:
        raise ModelLoadError(
            f"onnxruntime.tensorrt and device 'cuda' need ONNX Runtime's {missing}, which this "
            f"installation lacks (it has {', '.join(present) or 'none'}): install onnxruntime-gpu built "
            "with TensorRT on a machine with an NVIDIA GPU, or set device: auto to let the model run "
            "on CUDA or the CPU where TensorRT is absent"
        )
    chosen: list[Provider] = [CUDA, CPU] if CUDA in present else [CPU]
    where = "CUDA" if CUDA in present else "the CPU"
    return ProviderChoice(
        chosen, [f"onnxruntime.tensorrt asked for, but {missing} is absent: running on {where}"]
    )


def providers_for(device: Device, available: Sequence[str] | None = None) -> list[str]:
    """Execution providers for a device setting; CUDA only where asked for (or auto) and present."""
    present = available_providers() if available is None else list(available)
    if device == Device.CPU:
        return [CPU]
    if device == Device.NEURON:
        raise ModelLoadError(
            "device 'neuron' is for TorchScript models traced with torch_neuronx (backend: torchscript); "
            "ONNX Runtime has no Neuron provider here"
        )
    if CUDA in present:
        return [CUDA, CPU]
    if device == Device.CUDA:
        raise ModelLoadError("device 'cuda' asked for, but ONNX Runtime has no CUDA execution provider here")
    return [CPU]


def check_session(choice: ProviderChoice, got: Sequence[str], device: Device) -> list[str]:
    """What the session really runs on against what was asked: the first provider asked for
    missing from the session is a load error with device cuda, a warning (returned) otherwise."""
    first = choice.names[0]
    if first in got:
        return []
    message = f"ONNX Runtime did not enable {first} (the session runs on {', '.join(got) or 'nothing'})"
    if device == Device.CUDA:
        raise ModelLoadError(message)
    return [message]
