"""The TorchScript steps of a compile: cast to the precision, trace, freeze, save with the signature.

The traced module takes (input_ids, attention_mask) and returns FP32 whatever it computes in, so
that the served signature is the same for every precision. `--target neuron` traces with
`torch_neuronx.trace` instead (fixed shapes: one bucket, `--auto-cast` for bf16).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelfleet.compile.errors import CompileError
from modelfleet.compile.onnx_steps import ignore_export_warnings
from modelfleet.compile.targets import Precision
from modelfleet.repository.config import TensorConfig
from modelfleet.runtimes.torchscript import SIGNATURE_FILE, signature_json

_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


class CastOutput(torch.nn.Module):
    """The model in its precision, answering FP32."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(input_ids, attention_mask)
        return out.float()


class ProgramModule(torch.nn.Module):
    """The module of a torch.export program, which refuses train() and eval(): its mode was fixed
    when it was exported, so setting it here is a no-op rather than an error."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def train(self, mode: bool = True) -> ProgramModule:
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(input_ids, attention_mask)
        return out


def trace(
    module: torch.nn.Module,
    precision: Precision,
    example: dict[str, np.ndarray],
    input_names: Sequence[str],
    neuron: bool = False,
) -> Any:
    """The traced (and, off Neuron, frozen) module; `module` is cast in place (off Neuron)."""
    # Neuron casts inside its compiler (--auto-cast); elsewhere the weights are cast here
    wrapped = CastOutput(module if neuron else module.to(_DTYPES[precision])).eval()
    args = tuple(torch.from_numpy(example[name]) for name in input_names)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            ignore_export_warnings()
            if neuron:
                import torch_neuronx

                cast = (
                    ["--auto-cast", "all", "--auto-cast-type", "bf16"] if precision == Precision.BF16 else []
                )
                return torch_neuronx.trace(wrapped, args, compiler_args=cast)
            traced = torch.jit.trace(wrapped, args, check_trace=False)  # type: ignore[no-untyped-call]
            return torch.jit.freeze(traced)
    except ImportError:
        raise
    except Exception as exc:
        raise CompileError(f"tracing failed: {type(exc).__name__}: {exc}") from None


def save(
    traced: Any,
    path: Path,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    target: str = "cpu",
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        torch.jit.save(
            traced, str(path), _extra_files={SIGNATURE_FILE: signature_json(inputs, outputs, target)}
        )


def runner(traced: Any, input_names: Sequence[str]) -> Any:
    """A gate / profile runner: feeds -> FP32 output."""

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = traced(*(torch.from_numpy(feeds[name]) for name in input_names))
        result: np.ndarray = out.float().numpy() if isinstance(out, torch.Tensor) else out
        return result

    return run
