"""A model version as its clients see it: name, version, tensors and platform, from its config."""

from __future__ import annotations

from modelfleet.protocol.documents import ModelMetadata, TensorMetadata
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import ModelConfig

PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
}  # backend -> Triton platform


class Signature:
    """Everything the metadata, config and transports read of a model version, computed once."""

    __slots__ = ("config", "inputs", "max_batch_size", "name", "outputs", "version", "version_str")

    def __init__(self, name: str, version: int, config: ModelConfig) -> None:
        assert config.inputs is not None and config.outputs is not None and config.max_batch_size is not None
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.inputs: dict[str, TensorSpec] = {t.name: t.spec() for t in config.inputs}
        self.outputs: dict[str, TensorSpec] = {t.name: t.spec() for t in config.outputs}
        self.max_batch_size: int = config.max_batch_size

    @property
    def platform(self) -> str:
        """Triton's name for the backend (what its clients expect), else the backend's own."""
        backend = self.config.backend or ""
        return PLATFORMS.get(backend, backend)

    def metadata(self, versions: list[str]) -> ModelMetadata:
        """The V2 model metadata, listing `versions` (those served)."""
        return ModelMetadata(
            name=self.name,
            versions=versions,
            platform=self.platform,
            inputs=[_tensor(t) for t in self.inputs.values()],
            outputs=[_tensor(t) for t in self.outputs.values()],
        )


def _tensor(spec: TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
