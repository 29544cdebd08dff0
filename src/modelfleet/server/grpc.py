"""The V2 gRPC transport (`inference.GRPCInferenceService`): parse, call the data plane, encode,
map errors. Nothing else; it runs on grpc.aio in the same event loop as the HTTP server.

Every method takes and returns raw bytes (no serializers registered), so that a malformed message
is a clear INVALID_ARGUMENT and each error goes through the one status table below. The message
size limit is max_body_bytes, enforced by gRPC itself before a larger message is read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from http import HTTPStatus
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message

from modelfleet.config import ServerSettings
from modelfleet.engine.model import LoadedModel
from modelfleet.errors import BadRequest, ModelfleetError, NotFound, Overloaded, Unavailable
from modelfleet.protocol.grpc import METHODS, SERVICE, codec
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.rest import Limits
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.logs import begin_request, end_request, set_request_id
from modelfleet.server.metrics import Metrics

log = logging.getLogger(__name__)

# The one mapping from an error's HTTP status to a gRPC status code.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED,
    HTTPStatus.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.INTERNAL_SERVER_ERROR: grpc.StatusCode.INTERNAL,
    HTTPStatus.NOT_IMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.INSUFFICIENT_STORAGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_INTERNAL = ModelfleetError("internal server error")

Context = grpc.aio.ServicerContext[bytes, bytes]


class Access(StrEnum):
    """What a call reaches, for the credential check (`GrpcFront._admit`)."""

    PUBLIC = "public"  # health and server metadata
    MODEL = "model"  # one model: inference, its metadata, readiness, statistics
    CONTROL = "control"  # the repository: index, load, unload


def status_code(status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(status, grpc.StatusCode.INTERNAL)


async def abort(context: Context, exc: ModelfleetError) -> NoReturn:
    """End the call with the error's gRPC code and the same message text as the HTTP answer."""
    if isinstance(exc, Overloaded):
        context.set_trailing_metadata((("retry-after", str(exc.retry_after_s)),))
    await context.abort(status_code(exc.status), exc.message)


class GrpcFront:
    """The gRPC server over one data plane; `start()` binds and serves, `stop()` drains."""

    def __init__(self, plane: DataPlane, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self._plane = plane
        self._settings = settings
        self._answered = metrics.answered if metrics is not None else _not_counted
        self._limits = Limits(settings.max_inputs, settings.max_tensor_rank, settings.max_tensor_elements)
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind host:grpc_port and serve; the port bound. Fails, naming the port, when it is taken."""
        settings = self._settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a second server on the port must fail, not share it
            ]
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, self._handlers()),))
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        try:
            port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
        except RuntimeError:
            port = 0
        if port == 0:
            raise OSError(
                f"cannot listen for gRPC on {host}:{settings.grpc_port} (in use?); "
                "choose another with --grpc-port or MODELFLEET_GRPC_PORT (0: no gRPC)"
            )
        await server.start()
        self._server, self.port = server, port
        log.info("gRPC (inference.GRPCInferenceService) on %s:%d", host, port)
        return port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and let those in flight finish within grace_s."""
        if self._server is not None:
            await self._server.stop(grace_s)

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler[bytes, bytes]]:
        calls: dict[str, Callable[[bytes, Context], Awaitable[bytes]]] = {"ModelInfer": self.model_infer}
        for method, handler in (
            ("ServerLive", self.server_live),
            ("ServerReady", self.server_ready),
            ("ModelReady", self.model_ready),
            ("ServerMetadata", self.server_metadata),
            ("ModelMetadata", self.model_metadata),
            ("ModelConfig", self.model_config),
            ("ModelStatistics", self.model_statistics),
            ("RepositoryIndex", self.repository_index),
            ("RepositoryModelLoad", self.repository_model_load),
            ("RepositoryModelUnload", self.repository_model_unload),
        ):
            calls[method] = _control_call(METHODS[method][0], handler)
        assert calls.keys() == METHODS.keys()
        return {method: grpc.unary_unary_rpc_method_handler(call) for method, call in calls.items()}

    def _admit(self, context: Context, access: Access, model: str | None = None) -> None:
        """The one place each call's credentials will be checked (issue 5 item 6): the auth layer
        reads the key from `context.invocation_metadata()` and raises Unauthorized, or NotFound
        for another tenant's model. No check yet: every call is admitted."""

    # -- inference: the hot path, kept free of per-call work that could be done once -----------------

    async def model_infer(self, raw: bytes, context: Context) -> bytes:
        started = time.perf_counter_ns()
        try:
            message = pb.ModelInferRequest.FromString(raw)
        except DecodeError:
            await abort(context, BadRequest("request is not a valid ModelInferRequest message"))
        name = message.model_name
        token = begin_request(name)  # log lines from here on carry the request
        model: LoadedModel | None = None
        try:
            self._admit(context, Access.MODEL, name)
            model = await self._plane.model(name, message.model_version or None)
            request = codec.decode_infer_request(message, self._limits)
            if request.id is not None:
                set_request_id(request.id)
            response = await self._plane.infer(model, request, started)
            answer = codec.encode_infer_response(response).SerializeToString()
        except ModelfleetError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error in ModelInfer")
            error = _INTERNAL
        else:
            self._answered(name, 200, model)
            return answer
        finally:
            end_request(token)
        self._answered(name, error.status, model)
        await abort(context, error)

    # -- health and metadata ------------------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Message:
        self._admit(context, Access.PUBLIC)
        return pb.ServerLiveResponse(live=self._plane.live())

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Message:
        self._admit(context, Access.PUBLIC)
        return pb.ServerReadyResponse(ready=self._plane.ready())

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Message:
        """ready=false for a model that is unknown or not ready (tritonclient's is_model_ready
        reads the flag); a malformed name is still INVALID_ARGUMENT."""
        self._admit(context, Access.MODEL, request.name)
        try:
            self._plane.model_ready(request.name, request.version or None)
        except (NotFound, Unavailable):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Message:
        self._admit(context, Access.PUBLIC)
        return pb.ServerMetadataResponse(**self._plane.server_metadata())

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Message:
        self._admit(context, Access.MODEL, request.name)
        return codec.model_metadata(await self._plane.model_metadata(request.name, request.version or None))

    async def model_config(self, request: pb.ModelConfigRequest, context: Context) -> Message:
        self._admit(context, Access.MODEL, request.name)
        return codec.model_config(await self._plane.model_config(request.name, request.version or None))

    async def model_statistics(self, request: pb.ModelStatisticsRequest, context: Context) -> Message:
        self._admit(context, Access.MODEL, request.name or None)
        return codec.statistics(self._plane.statistics(request.name or None, request.version or None))

    # -- repository extension ----------------------------------------------------------------------------

    async def repository_index(self, request: pb.RepositoryIndexRequest, context: Context) -> Message:
        self._admit(context, Access.CONTROL)
        return codec.repository_index(await self._plane.repository_index(request.ready))

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> Message:
        self._admit(context, Access.CONTROL, request.model_name)
        await self._plane.load(request.model_name, codec.parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> Message:
        self._admit(context, Access.CONTROL, request.model_name)
        await self._plane.unload(request.model_name, codec.parameters(request.parameters))
        return pb.RepositoryModelUnloadResponse()


def _control_call(
    kind: type[Message], handler: Callable[[Any, Context], Awaitable[Message]]
) -> Callable[[bytes, Context], Awaitable[bytes]]:
    """Parse the request, run the handler, serialize its answer, map its errors."""

    async def call(raw: bytes, context: Context) -> bytes:
        try:
            request = kind.FromString(raw)
        except DecodeError:
            await abort(context, BadRequest(f"request is not a valid {kind.__name__} message"))
        try:
            return (await handler(request, context)).SerializeToString()
        except ModelfleetError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error in %s", kind.__name__.removesuffix("Request"))
            error = _INTERNAL
        await abort(context, error)

    return call


def _not_counted(name: str, status: int, model: LoadedModel | None) -> None:
    pass
