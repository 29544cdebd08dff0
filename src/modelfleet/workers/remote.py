"""A model version served by worker processes, as the front sees it: its signature and counts
here, each request sent to a worker (`Dispatch`: the fleet routes and sends)."""

from __future__ import annotations

from typing import Protocol

from modelfleet.engine.signature import Signature
from modelfleet.engine.stats import ModelStats
from modelfleet.errors import Unavailable
from modelfleet.protocol.documents import ModelMetadata
from modelfleet.protocol.v2 import InferOutput, InferRequest, InferResponse, TensorSpec
from modelfleet.repository.config import ModelConfig
from modelfleet.workers import messages as m
from modelfleet.workers.client import error_of


class Dispatch(Protocol):
    async def dispatch(self, name: str, version: str, request: InferRequest) -> InferResponse:
        """Run the request on a worker that has (or gets) the model."""
        ...


class RemoteModel:
    """A `ServedModel` whose work is done in a worker; its statistics are the sum of its copies'
    in the workers' last reports (the fleet folds them in)."""

    def __init__(self, dispatch: Dispatch, version: m.Version, name: str) -> None:
        config = ModelConfig.model_validate_json(version.config_json)
        self.signature = signature = Signature(name, version.version, config)
        self.name = name
        self.version = version.version
        self.version_str = signature.version_str
        self.config = config
        self.inputs: dict[str, TensorSpec] = signature.inputs
        self.outputs: dict[str, TensorSpec] = signature.outputs
        self.max_batch_size = signature.max_batch_size
        self.nbytes = version.nbytes
        self.load_s = 0.0
        self.in_flight = 0
        self.stats = ModelStats()
        self._dispatch = dispatch

    @property
    def platform(self) -> str:
        return self.signature.platform

    def metadata(self, versions: list[str]) -> ModelMetadata:
        return self.signature.metadata(versions)

    def expected_wait_ns(self) -> int:
        return 0  # the worker watches its own queue; the front has no disconnect watch to arm

    async def infer(self, request: InferRequest, started_ns: int) -> InferResponse:
        self.in_flight += 1
        try:
            return await self._dispatch.dispatch(self.name, self.version_str, request)
        finally:
            self.in_flight -= 1


def infer_message(
    request_id: int, name: str, version: str, request: InferRequest
) -> tuple[m.Infer, list[memoryview | bytes]]:
    """The Infer message for a request, and the tensors' buffers to send after it."""
    tensors, buffers = m.describe([(t.name, t.datatype, t.data) for t in request.inputs])
    outputs = None if request.outputs is None else [o.name for o in request.outputs]
    return m.Infer(request_id, name, version, tensors, outputs, request.id, request.parameters), buffers


def response_of(reply: m.Message, raw: memoryview, request: InferRequest) -> InferResponse:
    """A worker's answer as the response (its error as the error it carries)."""
    if not isinstance(reply, m.Result):
        raise error_of(reply) if isinstance(reply, m.Failed) else Unavailable("unexpected worker answer")
    arrays = m.arrays(reply.outputs, raw)
    outs = [InferOutput(t.name, t.datatype, t.shape, a) for t, a in zip(reply.outputs, arrays, strict=True)]
    return InferResponse(reply.model_name, reply.model_version, outs, request.id, reply.parameters)
