"""TorchScript adapter: one `torch.jit.load`-ed module per loaded model version, run under
`torch.inference_mode()` on the model's executor thread.

The signature comes from config.yaml (inputs and outputs) or, when it names none, from the
`modelfleet.json` that `modelfleet compile` stores inside model.pt. Inputs are given to the module
positionally in signature order; it returns a tensor, or a tuple / list / dict of them, one per
output. bf16 models (compiled with --precision bf16) compute in bf16 and answer FP32; they are fast
on CPUs with AVX-512 BF16 or AMX and emulated elsewhere. A TorchScript file is code: serve only
models you compiled or trust, as for python models.
"""

from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelfleet.errors import InferenceFailed, ModelLoadError
from modelfleet.protocol.datatypes import DATATYPES
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import Device, TensorConfig
from modelfleet.runtimes.base import LoadSpec

SIGNATURE_FILE = "modelfleet.json"
"""Stored in model.pt by `torch.jit.save(..., _extra_files=...)`: {"inputs": [...], "outputs": [...]},
each a TensorConfig (name, datatype, shape)."""
_SIGNATURE_MAX_BYTES = 1 << 20


class TorchScriptModel:
    may_run_inline = False  # torch's own thread pool: keep its calls on the model's thread

    def __init__(self, module: Any, name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        self._module = module
        self._name = name
        self.inputs = inputs
        self.outputs = outputs
        self._dtypes = {t.name: DATATYPES[t.datatype].dtype for t in outputs}
        self._positions = {t.name: i for i, t in enumerate(outputs)}

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in self.inputs]
        try:
            with torch.inference_mode():
                produced = self._module(*args)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            raise InferenceFailed(f"model '{self._name}' failed: {message}") from None
        tensors = self._by_name(produced)
        return [self._numpy(tensors[name], name) for name in outputs]

    def unload(self) -> None:
        self._module = None

    def _by_name(self, produced: Any) -> dict[str, Any]:
        if isinstance(produced, dict):
            return produced
        items = list(produced) if isinstance(produced, tuple | list) else [produced]
        if len(items) != len(self.outputs):
            raise InferenceFailed(
                f"model '{self._name}' returned {len(items)} tensor(s) for {len(self.outputs)} output(s)"
            )
        return {t.name: item for t, item in zip(self.outputs, items, strict=True)}

    def _numpy(self, tensor: Any, name: str) -> np.ndarray:
        if not isinstance(tensor, torch.Tensor):
            raise InferenceFailed(f"model '{self._name}' returned {type(tensor).__name__} for '{name}'")
        if tensor.dtype == torch.bfloat16:  # numpy has no bf16
            tensor = tensor.float()
        return np.asarray(tensor.numpy(), dtype=self._dtypes[name])


def load(spec: LoadSpec) -> TorchScriptModel:
    where = f"{spec.name}/{spec.version}/{spec.path.name}"
    if not spec.path.is_file():
        raise ModelLoadError(f"version {spec.version} has no {spec.path.name}")
    if spec.default_intra_op_threads > 0 and torch.get_num_threads() != spec.default_intra_op_threads:
        torch.set_num_threads(spec.default_intra_op_threads)  # process-wide: every TorchScript model
    stored = _stored_signature(spec.path)
    if stored.get("target") == "neuron":
        if spec.config.device != Device.NEURON:
            raise ModelLoadError(
                f"{where} was compiled for Neuron: its config.yaml must say device: neuron, so that "
                "it is placed on a worker holding NeuronCores"
            )
        try:  # registers the Neuron operators a Neuron-traced module calls
            importlib.import_module("torch_neuronx")
        except ImportError:
            raise ModelLoadError(
                f"{where} was compiled for Neuron: this server has no torch_neuronx (AWS Neuron SDK)"
            ) from None
    extra = {SIGNATURE_FILE: ""}
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream in favour of torch.export; it is what Neuron and
            # most deployed PyTorch models still ship, so the warning is known and not the user's.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
            module = torch.jit.load(str(spec.path), map_location="cpu", _extra_files=extra)  # type: ignore[no-untyped-call]
    except Exception as exc:
        message = str(exc).replace(str(spec.path), where).strip().splitlines()
        raise ModelLoadError(f"torch cannot load {where}: {message[0][:300] if message else exc}") from None
    module.eval()
    inputs, outputs = _signature(spec, extra[SIGNATURE_FILE])
    return TorchScriptModel(module, spec.name, inputs, outputs)


def _signature(spec: LoadSpec, stored: str | bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    config = spec.config
    if config.inputs is not None and config.outputs is not None:
        return [t.spec() for t in config.inputs], [t.spec() for t in config.outputs]
    if not stored:
        raise ModelLoadError(
            f"{spec.path.name} carries no signature: declare inputs and outputs in config.yaml "
            "(TorchScript does not record them)"
        )
    if len(stored) > _SIGNATURE_MAX_BYTES:
        raise ModelLoadError(
            f"{SIGNATURE_FILE} in {spec.path.name} is larger than {_SIGNATURE_MAX_BYTES} bytes"
        )
    try:
        raw = json.loads(stored)
        inputs = [TensorConfig.model_validate(t).spec() for t in raw["inputs"]]
        outputs = [TensorConfig.model_validate(t).spec() for t in raw["outputs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{SIGNATURE_FILE} in {spec.path.name} is not a valid signature: {exc}"
        ) from None
    return inputs, outputs


def signature_json(
    inputs: Sequence[TensorConfig], outputs: Sequence[TensorConfig], target: str = "cpu"
) -> str:
    """The text `modelfleet compile` stores as SIGNATURE_FILE (target: where it was traced for)."""
    return json.dumps(
        {
            "inputs": [t.model_dump() for t in inputs],
            "outputs": [t.model_dump() for t in outputs],
            "target": target,
        }
    )


def _stored_signature(path: Path) -> dict[str, Any]:
    """SIGNATURE_FILE read from the archive before torch loads it ({} when absent or unreadable):
    a Neuron model needs torch_neuronx imported first."""
    try:
        with zipfile.ZipFile(path) as archive:
            entry = next(
                (i for i in archive.infolist() if i.filename.endswith(f"/extra/{SIGNATURE_FILE}")), None
            )
            if entry is None or entry.file_size > _SIGNATURE_MAX_BYTES:
                return {}
            raw = json.loads(archive.read(entry))
    except (OSError, zipfile.BadZipFile, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}
