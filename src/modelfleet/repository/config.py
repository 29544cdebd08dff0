"""The schema of `REPO/NAME/config.yaml`, validated strictly, and its completion from the model.

Shapes are full V2 shapes: when `max_batch_size > 0` the first dimension of every input and output
is the batch dimension and must be -1. A config may leave out inputs, outputs and max_batch_size;
the runtime fills them in from the model file at load (as Triton's auto-complete does), and a
config that contradicts the model is refused with both values in the message.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelfleet.errors import ModelLoadError
from modelfleet.protocol.datatypes import DATATYPES
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.names import is_alias

CONFIG_FILENAME = "config.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    """One input or output tensor."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """The tensor's name in the model."""
    datatype: str
    """V2 datatype name: BOOL, UINT8…UINT64, INT8…INT64, FP16, FP32, FP64, BYTES."""
    shape: list[Annotated[int, Field(ge=-1)]]
    """Full shape including the batch dimension; -1 marks a variable dimension."""

    @model_validator(mode="after")
    def _known_datatype(self) -> TensorConfig:
        if self.datatype not in DATATYPES:
            raise ValueError(f"unknown datatype '{self.datatype}'; expected one of {', '.join(DATATYPES)}")
        return self

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class VersionPolicy(_Strict):
    """Which version folders are served. Exactly one of the three; default: the latest one."""

    latest: Annotated[int, Field(ge=1)] | None = None
    """Serve the N highest version numbers."""
    all: bool = False
    """Serve every version folder."""
    specific: list[Annotated[int, Field(ge=0)]] | None = None
    """Serve exactly these versions."""

    @model_validator(mode="after")
    def _one_policy(self) -> VersionPolicy:
        chosen = [
            k
            for k, v in (("latest", self.latest), ("all", self.all or None), ("specific", self.specific))
            if v is not None
        ]
        if len(chosen) > 1:
            raise ValueError(f"give one of latest / all / specific, not {' and '.join(chosen)}")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of the available ones, highest first."""
        ordered = sorted(available, reverse=True)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific)]
        return ordered[: self.latest or 1]


class Device(StrEnum):
    AUTO = "auto"  # an accelerator when one is present, else the CPU
    CPU = "cpu"
    CUDA = "cuda"
    NEURON = "neuron"  # AWS NeuronCores: TorchScript traced by torch_neuronx, on workers holding cores


class TensorrtOptions(_Strict):
    """ONNX Runtime's TensorRT execution provider for this model (with `device: cuda`; written by
    `modelfleet compile --target tensorrt`). Engines are built on first use per input shape and
    kept in the cache folder, so later loads skip the build."""

    fp16: bool = False
    """Let TensorRT run layers in fp16 (trt_fp16_enable)."""
    engine_cache: str = "trt-engines"
    """The engine cache folder, relative to the version folder (trt_engine_cache_path)."""
    max_workspace_bytes: Annotated[int, Field(ge=1 << 20)] = 2 << 30
    """Scratch memory the engine builder may use (trt_max_workspace_size)."""

    @model_validator(mode="after")
    def _inside(self) -> TensorrtOptions:
        parts = Path(self.engine_cache).parts
        if not parts or Path(self.engine_cache).is_absolute() or ".." in parts:
            raise ValueError(
                f"engine_cache must be a folder inside the version folder, got '{self.engine_cache}'"
            )
        return self


class OnnxRuntimeOptions(_Strict):
    """Options of the ONNX Runtime backend."""

    intra_op_threads: Annotated[int, Field(ge=0)] | None = None
    """Threads inside one operator; 0 lets ONNX Runtime choose; unset: the server's default."""
    inter_op_threads: Annotated[int, Field(ge=0)] = 1
    """Threads across operators (only used with parallel execution)."""
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    """ONNX Runtime graph optimisation level."""
    prepacking: bool | None = None
    """Re-lay weights out for faster kernels (a private copy per session); unset: on, except for
    models taking weights from the repository's blob store, whose weights are shared in place
    (measured here: about 15-30 % slower MiniLM inference without it)."""
    tensorrt: TensorrtOptions | None = None
    """Run through the TensorRT execution provider with these options; unset: CUDA or CPU only."""


class WarmupConfig(_Strict):
    """Inferences run after a load and before the model is reported ready."""

    runs: Annotated[int, Field(ge=0, le=100)] | None = None
    """How many; 0 turns warm-up off; unset: 1 for models with their own session, 0 for adapters."""
    sample: str | None = None
    """A V2 JSON request body in the model folder (e.g. warmup.json); unset: inputs generated from
    the signature (zeros, ones for inputs named like *mask*, batch 1, other variable dims 8)."""

    @model_validator(mode="after")
    def _plain_file(self) -> WarmupConfig:
        if self.sample is not None and (Path(self.sample).name != self.sample or self.sample in (".", "..")):
            raise ValueError(f"sample must be a plain file name in the model folder, got '{self.sample}'")
        return self


class DynamicBatching(_Strict):
    """Requests queued for one model run together as one batch (rows concatenated, answers split)."""

    enabled: bool = True
    max_batch_size: Annotated[int, Field(ge=1)] | None = None
    """Most rows per execution; unset: the model's max_batch_size, at most 16 on CPU and 64 on a GPU."""
    max_queue_delay_us: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    """How long the first queued request may wait for others; 0: batch only what is already queued."""
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = []
    """Batch sizes to form when enough requests are queued (the delay waits for the largest)."""

    @model_validator(mode="after")
    def _sizes(self) -> DynamicBatching:
        sizes = self.preferred_batch_sizes
        if sizes != sorted(set(sizes)):
            raise ValueError(f"preferred_batch_sizes must be distinct and ascending, got {sizes}")
        if self.max_batch_size is not None and sizes and sizes[-1] > self.max_batch_size:
            raise ValueError(f"preferred_batch_sizes {sizes} go past max_batch_size {self.max_batch_size}")
        return self


class ShapeBuckets(_Strict):
    """Pad a variable axis up to the next of a few sizes, so that requests of different lengths
    batch together (and static-shape compiled models work); outputs are cut back after the run."""

    axis: Annotated[int, Field(ge=1)] = 1
    """The padded axis of every input named in `pad` (axis 0 is the batch)."""
    sizes: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    """Bucket lengths, ascending; a longer request gets 400."""
    pad: Annotated[dict[str, float], Field(min_length=1)]
    """The inputs to pad, with their padding value (e.g. input_ids: 0, attention_mask: 0)."""
    outputs: dict[str, Annotated[int, Field(ge=1)]] = {}
    """Outputs that carry the padded axis, with its position there: cut back to the request's length."""

    @model_validator(mode="after")
    def _ascending(self) -> ShapeBuckets:
        if self.sizes != sorted(set(self.sizes)):
            raise ValueError(f"sizes must be distinct and ascending, got {self.sizes}")
        return self

    def bucket(self, length: int) -> int | None:
        return next((size for size in self.sizes if size >= length), None)


class HeadConfig(_Strict):
    """A head over a shared base model: output = activation(base_output @ weight.T + bias).

    `weight` [out, in] and `bias` [out] come from the version's weights.json."""

    input: str
    """The base model's output that the head reads."""
    output: str = "logits"
    """The name of the head's output."""
    activation: Literal["none", "softmax", "sigmoid"] = "none"


class Step(_Strict):
    """One step of an ensemble."""

    model: str
    """A model of the same repository."""
    version: str | None = None
    inputs: Annotated[dict[str, str], Field(min_length=1)]
    """The step model's input -> the ensemble tensor that feeds it."""
    outputs: Annotated[dict[str, str], Field(min_length=1)]
    """The step model's output -> the ensemble tensor it becomes."""


class ModelConfig(_Strict):
    """`config.yaml` of one model. Every field is optional for an ONNX model."""

    name: str | None = None
    """Must equal the folder name when given."""
    backend: Literal["onnxruntime", "adapter", "python", "ensemble", "torchscript"] | None = None
    """The runtime; inferred from the files when left out (model.onnx -> onnxruntime).
    `adapter`: a small head (`head`) over a shared `base` model of the same repository.
    `python`: a class in model.py (pre/post-processing; only with --python-models).
    `ensemble`: `steps` through other models of the repository.
    `torchscript`: model.pt loaded with torch.jit.load (from `modelfleet compile --format torchscript`)."""
    steps: list[Step] | None = None
    """For ensembles: the models a request goes through, each step's inputs and outputs mapped to
    tensors of the ensemble (its inputs, or earlier steps' outputs); run in dependency order."""
    base: str | None = None
    """For adapters: the base model whose output the head reads; requests of every adapter over
    one base are batched together through it."""
    head: HeadConfig | None = None
    pinned: bool = False
    """Loaded at start and never evicted."""
    warmup: WarmupConfig = WarmupConfig()
    dynamic_batching: DynamicBatching = DynamicBatching()
    instances: Annotated[int, Field(ge=1, le=64)] = 1
    """Executions of this model that run at the same time (threads sharing one session). Measured
    on CPU (docs/benchmarks.md): one instance with every core and dynamic batching is as fast under
    load as two with half the cores each, and about twice as fast for a lone request."""
    inline_max_us: Annotated[float, Field(ge=0)] | None = None
    """Let this model run on the event loop while its runs take at most this many microseconds
    (the server's `inline_max_us` for this model; docs/configuration.md). Unset: the server's."""
    shape_buckets: ShapeBuckets | None = None
    response_cache: bool = False
    """Answer repeated identical requests from the server's response cache (deterministic models)."""
    memory_bytes: Annotated[int, Field(ge=0)] | None = None
    """Expected resident size of one version: room is made for it before the first load, and
    afterwards the larger of it and the measured size is accounted."""
    filename: str | None = None
    """The model file inside each version folder (default per backend, e.g. model.onnx)."""
    max_batch_size: Annotated[int, Field(ge=0)] | None = None
    """Largest batch one request may carry; 0: the model has no batch dimension."""
    inputs: list[TensorConfig] | None = None
    outputs: list[TensorConfig] | None = None
    version_policy: VersionPolicy = VersionPolicy()
    traffic: dict[int, Annotated[float, Field(ge=0)]] | None = None
    """Weights per version for requests that name no version (an A/B split), e.g. {1: 90, 2: 10};
    every version named must be served by the version policy. Unset: the highest version."""
    aliases: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Names for versions, usable wherever a version goes: {stable: 1, canary: 2} serves
    /v2/models/NAME/versions/canary/infer from version 2."""
    device: Device = Device.AUTO
    """Where the model runs: auto uses an accelerator when one is present (falling back to the CPU);
    cuda demands one (a load error without it); neuron: a TorchScript model traced with
    torch_neuronx, placed only on workers holding NeuronCores (`--neuron-core-groups`)."""
    neuron_cores: Annotated[int, Field(ge=1, le=128)] = 1
    """With device neuron: the NeuronCores one copy needs (a model compiled to run across several);
    it is placed only on a worker whose core group has at least this many."""
    onnxruntime: OnnxRuntimeOptions = OnnxRuntimeOptions()

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            if tensors is None:
                continue
            names = [t.name for t in tensors]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"{kind}: duplicate tensor name(s) {sorted(dup)}")
            if self.max_batch_size:
                for t in tensors:
                    if not t.shape or t.shape[0] != -1:
                        raise ValueError(
                            f"{kind}: '{t.name}' has shape {t.shape}, but max_batch_size "
                            f"{self.max_batch_size} needs -1 as its first (batch) dimension"
                        )
        if self.traffic is not None and not any(w > 0 for w in self.traffic.values()):
            raise ValueError("traffic needs at least one version with a weight above 0")
        bad_alias = [a for a in self.aliases if not is_alias(a)]
        if bad_alias:
            raise ValueError(
                f"aliases {bad_alias}: use lower-case letters, digits, '_' and '-', starting with a letter"
            )
        if (self.backend == "ensemble") != (self.steps is not None):
            raise ValueError("an ensemble needs backend: ensemble and steps: [...], both")
        if self.steps is not None:
            _check_steps(self)
        if (self.backend == "adapter") != (self.base is not None) or (self.base is None) != (
            self.head is None
        ):
            raise ValueError("an adapter needs backend: adapter, base: <model> and head: {...}, all three")
        if self.onnxruntime.tensorrt is not None and self.device in (Device.CPU, Device.NEURON):
            raise ValueError(
                f"onnxruntime.tensorrt needs device cuda or auto, not {self.device} (TensorRT runs on NVIDIA GPUs)"
            )
        if self.device == Device.NEURON and self.backend not in (None, "torchscript"):
            raise ValueError(f"device neuron is for backend torchscript (torch_neuronx), not {self.backend}")
        if self.filename is not None and (
            Path(self.filename).name != self.filename or self.filename in ("", ".", "..")
        ):
            raise ValueError(f"filename must be a plain file name, got '{self.filename}'")
        return self


def _check_steps(config: ModelConfig) -> None:
    """Every step input is an ensemble input or an earlier-produced tensor; every ensemble output
    is produced; no tensor is produced twice; the steps form no cycle (any order is fine)."""
    assert config.steps is not None
    if config.inputs is None or config.outputs is None:
        raise ValueError("an ensemble must declare its inputs and outputs")
    known = {t.name for t in config.inputs}
    produced: set[str] = set()
    for step in config.steps:
        twice = produced & set(step.outputs.values()) | known & set(step.outputs.values())
        if twice:
            raise ValueError(f"steps: tensor(s) {sorted(twice)} produced twice")
        produced |= set(step.outputs.values())
    pending = list(config.steps)
    while pending:
        ready = [s for s in pending if set(s.inputs.values()) <= known]
        if not ready:
            missing = sorted({t for s in pending for t in s.inputs.values()} - known - produced)
            problem = f"no step produces {missing}" if missing else "the steps form a cycle"
            raise ValueError(f"steps: {problem}")
        for step in ready:
            known |= set(step.outputs.values())
            pending.remove(step)
    missing_outputs = sorted({t.name for t in config.outputs} - known)
    if missing_outputs:
        raise ValueError(f"steps: no step produces the ensemble output(s) {missing_outputs}")


def format_validation_error(exc: ValidationError) -> str:
    """`loc: message; loc: message` without pydantic's URLs and input dumps."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_config(text: str, folder_name: str) -> ModelConfig:
    """Parse config.yaml text; ModelLoadError names the first problems found."""
    try:
        raw: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ModelLoadError(f"{CONFIG_FILENAME} is not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{CONFIG_FILENAME} must be a mapping, got {type(raw).__name__}")
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ModelLoadError(f"{CONFIG_FILENAME}: {format_validation_error(exc)}") from None
    if config.name is not None and config.name != folder_name:
        raise ModelLoadError(
            f"{CONFIG_FILENAME}: name '{config.name}' differs from the folder name '{folder_name}'"
        )
    return config


def complete_config(
    config: ModelConfig, inputs: list[TensorSpec], outputs: list[TensorSpec], default_max_batch_size: int
) -> ModelConfig:
    """Fill what the config leaves out from the model's own signature; refuse contradictions.

    The model's signature uses -1 for every dynamic dimension. A config may narrow a dynamic
    dimension to a fixed size but not change a fixed one, nor a datatype.
    """
    checked_in = _merge("inputs", config.inputs, inputs)
    checked_out = _merge("outputs", config.outputs, outputs)
    batchable = all(t.shape and t.shape[0] == -1 for t in (*inputs, *outputs))
    max_batch = config.max_batch_size
    if max_batch is None:
        max_batch = default_max_batch_size if batchable else 0
    elif max_batch > 0 and not batchable:
        fixed = next(t for t in (*inputs, *outputs) if not t.shape or t.shape[0] != -1)
        raise ModelLoadError(
            f"max_batch_size {max_batch} needs a variable first dimension, but the model's "
            f"'{fixed.name}' has shape {list(fixed.shape)}"
        )
    if config.shape_buckets is not None:
        _check_buckets(config.shape_buckets, checked_in, checked_out)
    return config.model_copy(
        update={"inputs": checked_in, "outputs": checked_out, "max_batch_size": max_batch}
    )


def _check_buckets(buckets: ShapeBuckets, inputs: list[TensorConfig], outputs: list[TensorConfig]) -> None:
    by_name = {t.name: t for t in (*inputs, *outputs)}
    wanted = [("pad", name, buckets.axis) for name in buckets.pad]
    wanted += [("outputs", name, axis) for name, axis in buckets.outputs.items()]
    for kind, name, axis in wanted:
        tensor = by_name.get(name)
        if tensor is None:
            raise ModelLoadError(f"shape_buckets.{kind}: the model has no tensor '{name}'")
        if axis >= len(tensor.shape) or tensor.shape[axis] != -1:
            raise ModelLoadError(
                f"shape_buckets.{kind}: '{name}' has shape {tensor.shape}; axis {axis} must be variable (-1)"
            )


def _merge(kind: str, declared: list[TensorConfig] | None, actual: list[TensorSpec]) -> list[TensorConfig]:
    if declared is None:
        return [TensorConfig(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in actual]
    by_name = {t.name: t for t in actual}
    declared_names = {t.name for t in declared}
    unknown = [t.name for t in declared if t.name not in by_name]
    if unknown:
        raise ModelLoadError(f"{kind}: {unknown} not in the model, which has {sorted(by_name)}")
    missing = [name for name in by_name if name not in declared_names]
    if missing and kind == "inputs":
        raise ModelLoadError(f"{kind}: the model also needs {missing}; list every input or none")
    for t in declared:
        real = by_name[t.name]
        if t.datatype != real.datatype:
            raise ModelLoadError(
                f"{kind}: '{t.name}' is {real.datatype} in the model, config says {t.datatype}"
            )
        if len(t.shape) != len(real.shape) or any(
            r != -1 and c != r for c, r in zip(t.shape, real.shape, strict=True)
        ):
            raise ModelLoadError(
                f"{kind}: '{t.name}' has shape {list(real.shape)} in the model, config says {t.shape}"
            )
    return list(declared)
