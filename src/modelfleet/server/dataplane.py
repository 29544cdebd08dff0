"""The transport-free data plane: every V2 operation, once, for HTTP, gRPC and SageMaker alike."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from modelfleet import __version__
from modelfleet.engine.ports import ModelHost, ServedModel
from modelfleet.errors import BadRequest, ModelLoadError
from modelfleet.protocol.documents import (
    AllVersions,
    ConfigTensor,
    IndexEntry,
    LatestVersions,
    ModelConfiguration,
    ModelMetadata,
    ModelReady,
    ServerMetadata,
    SpecificVersions,
    Statistics,
    VersionPolicy,
    Workers,
)
from modelfleet.protocol.v2 import InferRequest, InferResponse, TensorSpec

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "model_configuration"]
_TRITON_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


class DataPlane:
    """Over a `ModelHost`: the models of this process (ModelManager) or, with --workers N, of
    worker processes (Fleet)."""

    def __init__(self, manager: ModelHost) -> None:
        self.manager = manager
        self.draining = False

    # -- health and metadata ------------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.manager.started and not self.draining

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="modelfleet", version=__version__, extensions=EXTENSIONS)

    async def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        model = await self.model(name, version)
        return model.metadata(self.manager.served_versions(name))

    def model_ready(self, name: str, version: str | None) -> ModelReady:
        """The model's readiness document; raises (404 / 503) when it is not resident and ready."""
        model = self.manager.peek(name, version)
        if model is None:
            record = self.manager.record(name)
            assert record is not None  # peek raised 404 for a model without one
            raise record.not_ready(version)
        return ModelReady(name=model.name, version=model.version_str, ready=True)

    async def model_config(self, name: str, version: str | None) -> ModelConfiguration:
        """The completed config in Triton's JSON shape (dims without the batch dimension)."""
        model = await self.model(name, version)
        config = model.config
        skip = 1 if model.max_batch_size else 0

        def tensors(specs: dict[str, TensorSpec]) -> list[ConfigTensor]:
            return [
                ConfigTensor(name=s.name, data_type=_TRITON_TYPES[s.datatype], dims=list(s.shape[skip:]))
                for s in specs.values()
            ]

        policy = config.version_policy
        if policy.all:
            version_policy = VersionPolicy(all=AllVersions())
        elif policy.specific is not None:
            version_policy = VersionPolicy(specific=SpecificVersions(versions=policy.specific))
        else:
            version_policy = VersionPolicy(latest=LatestVersions(num_versions=policy.latest or 1))
        return ModelConfiguration(
            name=model.name,
            platform=model.platform,
            backend=config.backend,
            max_batch_size=model.max_batch_size,
            input=tensors(model.inputs),
            output=tensors(model.outputs),
            version_policy=version_policy,
        )

    # -- inference ------------------------------------------------------------------------------------

    async def model(self, name: str, version: str | None) -> ServedModel:
        """The ready model a request names, loaded on demand (400 bad name, 404 unknown, 503 not
        ready, 507 no room); transports call this before decoding the body so that a wrong model
        is reported before a wrong tensor."""
        return self.manager.resident(name, version) or await self.manager.acquire(name, version)

    def resident(self, name: str, version: str | None) -> ServedModel | None:
        """The model if it is resident and ready now (no load, no await); else None: ask `model`."""
        return self.manager.resident(name, version)

    def infer(self, model: ServedModel, request: InferRequest, started_ns: int) -> Awaitable[InferResponse]:
        return model.infer(request, started_ns)  # the model's own coroutine: no layer of our own

    # -- repository extension ----------------------------------------------------------------------------

    async def repository_index(self, ready_only: bool, refresh: bool = True) -> list[IndexEntry]:
        """The index, after looking for added and removed models when `refresh` (model control)."""
        if refresh:
            await self.manager.refresh()
        return self.manager.index(ready_only)

    async def load(self, name: str, parameters: dict[str, Any]) -> None:
        if any(key.startswith("file:") for key in parameters):
            raise BadRequest(
                "model files cannot be uploaded through the load API; put them in the repository"
            )
        if "config" in parameters:
            raise BadRequest("config overrides are not accepted; edit config.yaml in the repository")
        try:
            await self.manager.load(name)
        except ModelLoadError as exc:
            raise BadRequest(f"failed to load model '{name}': {exc.message}") from None

    async def unload(self, name: str, parameters: dict[str, Any]) -> None:
        await self.manager.unload(name)

    # -- statistics extension ------------------------------------------------------------------------------

    def statistics(self, name: str | None, version: str | None) -> Statistics:
        return self.manager.statistics(name, version)

    # -- workers ----------------------------------------------------------------------------------------------------

    async def workers(self) -> Workers:
        """Each worker with its device, memory and models (one, this process, without workers)."""
        return await self.manager.workers()

    async def unload_from(self, worker: str, name: str) -> None:
        """Remove a model from one worker (without workers: from this process, as unload does)."""
        if not worker.isdigit():
            raise BadRequest(f"worker id must be a number, got '{worker[:40]}'")
        await self.manager.unload_from(int(worker), name)
