"""The V2 gRPC transport (`inference.GRPCInferenceService`): parse, call the data plane, encode,
map errors. Nothing else; it runs on server/h2grpc.py's HTTP/2 server in the same event loop as
the HTTP server.

Every method takes and returns raw bytes, so that a malformed message is a clear INVALID_ARGUMENT
and each error goes through the one status table below. The message size limit is
max_body_bytes, enforced before a larger message is read. Keys and tenants are the HTTP front's
Guard (server/auth.py): the key comes from the call's metadata (`authorization: Bearer KEY` or
`x-api-key: KEY`), the client address from the connection's socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

from google.protobuf.message import DecodeError, Message

from modelfleet.config import ServerSettings
from modelfleet.engine.ports import ServedModel
from modelfleet.errors import BadRequest, ModelfleetError, NotFound, Overloaded, Unavailable
from modelfleet.protocol.grpc import METHODS, codec, method_path
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.rest import Limits
from modelfleet.protocol.v2 import InferRequest, InferResponse
from modelfleet.server.auth import OPEN, Access, Guard, Principal, presented_key
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.h2grpc import Call, H2Server, Status, StatusCode
from modelfleet.server.h2grpc import Limits as H2Limits
from modelfleet.server.inference import INTERNAL, Inference
from modelfleet.server.metrics import Metrics
from modelfleet.server.quota import Quota

log = logging.getLogger(__name__)

# The one mapping from an error's HTTP status to a gRPC status code.
STATUS_CODES: dict[int, StatusCode] = {
    HTTPStatus.BAD_REQUEST: StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: StatusCode.UNAUTHENTICATED,
    HTTPStatus.FORBIDDEN: StatusCode.PERMISSION_DENIED,
    HTTPStatus.NOT_FOUND: StatusCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: StatusCode.UNIMPLEMENTED,
    HTTPStatus.NOT_ACCEPTABLE: StatusCode.INVALID_ARGUMENT,  # SageMaker's; listed for completeness
    HTTPStatus.REQUEST_TIMEOUT: StatusCode.DEADLINE_EXCEEDED,  # HTTP's body timeout; listed likewise
    HTTPStatus.CONFLICT: StatusCode.ALREADY_EXISTS,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: StatusCode.INVALID_ARGUMENT,  # SageMaker's, likewise
    HTTPStatus.TOO_MANY_REQUESTS: StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.INTERNAL_SERVER_ERROR: StatusCode.INTERNAL,
    HTTPStatus.NOT_IMPLEMENTED: StatusCode.UNIMPLEMENTED,
    HTTPStatus.SERVICE_UNAVAILABLE: StatusCode.UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT: StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.INSUFFICIENT_STORAGE: StatusCode.RESOURCE_EXHAUSTED,
}

Metadata = Iterable[tuple[str, str | bytes]]


def status_code(status: int) -> StatusCode:
    return STATUS_CODES.get(status, StatusCode.INTERNAL)


def status(exc: ModelfleetError) -> Status:
    """The call's end for an error: its gRPC code and the same message text as the HTTP answer."""
    trailers = (("retry-after", str(exc.retry_after_s)),) if isinstance(exc, Overloaded) else ()
    return Status(status_code(exc.status), exc.message, trailers)


def admit(
    guard: Guard,
    access: Access,
    metadata: Metadata | None,
    peer: str | None,
    name: str | None = None,
    version: str | None = None,
) -> Principal:
    """The Guard's verdict for one call: its key from the metadata (`authorization: Bearer KEY`,
    else `x-api-key: KEY`, the first of each), its address the client's IP (None: not loopback)."""
    authorization: str | bytes | None = None
    api_key: str | bytes | None = None
    for key, value in metadata or ():
        if key == "authorization" and authorization is None:
            authorization = value
        elif key == "x-api-key" and api_key is None:
            api_key = value
    return guard.admit(access, presented_key(authorization, api_key), peer, name, version)


class GrpcFront:
    """The gRPC server over one data plane; `start()` binds and serves, `stop()` drains."""

    def __init__(
        self,
        plane: DataPlane,
        settings: ServerSettings,
        metrics: Metrics | None = None,
        guard: Guard | None = None,
    ) -> None:
        """`guard`: the same one as the HTTP front's (without one: every model open, control from
        loopback only)."""
        self._plane = plane
        self._settings = settings
        self._guard = guard or Guard({})
        self._inference = Inference(plane, metrics.answered if metrics is not None else None)
        self._limits = Limits.from_settings(settings)
        self.port = 0
        self._server: H2Server | None = None

    async def start(self) -> int:
        """Bind host:grpc_port and serve; the port bound. Fails, naming the port, when it is taken."""
        settings = self._settings
        server = H2Server(
            {method_path(method): call for method, call in self._handlers().items()},
            H2Limits(
                max_message_bytes=settings.max_body_bytes,
                # the HTTP front's bounds, each for the gRPC port on its own
                max_connections=settings.max_connections,
                max_undispatched_bytes_total=settings.max_body_bytes_in_flight,
                message_timeout_s=settings.body_timeout_s,
            ),
        )
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        try:
            port = await server.start(settings.host, settings.grpc_port)
        except OSError as exc:
            raise OSError(
                f"cannot listen for gRPC on {host}:{settings.grpc_port} ({exc.strerror or exc}); "
                "choose another with --grpc-port or MODELFLEET_GRPC_PORT (0: no gRPC)"
            ) from None
        self._server, self.port = server, port
        log.info("gRPC (inference.GRPCInferenceService) on %s:%d", host, port)
        return port

    def begin_shutdown(self) -> None:
        """At once: stop listening, GOAWAY, refuse new calls; calls in flight go on."""
        if self._server is not None:
            self._server.begin_shutdown()

    def end_shutdown(self) -> None:
        """The deadline: calls still open are answered UNAVAILABLE."""
        if self._server is not None:
            self._server.end_shutdown("the server is shutting down; retry on another replica")

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls and let those in flight finish within grace_s."""
        if self._server is not None:
            await self._server.stop(grace_s)

    def _handlers(self) -> dict[str, Callable[[bytes, Call], Awaitable[bytes]]]:
        calls: dict[str, Callable[[bytes, Call], Awaitable[bytes]]] = {"ModelInfer": self.model_infer}
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
        return calls

    def _admit(
        self, call: Call, access: Access, name: str | None = None, version: str | None = None
    ) -> Principal:
        """Who makes this call, if they may: 401, 403, or for another tenant's model exactly the
        unknown-model error. Without inference keys, model calls are open: nothing is read."""
        if access is Access.PUBLIC or (access is Access.MODEL and not self._guard.enabled):
            return OPEN
        return admit(self._guard, access, call.metadata, call.peer, name, version)

    # -- inference: the hot path, kept free of per-call work that could be done once -----------------

    async def model_infer(self, raw: bytes, call: Call) -> bytes:
        started = time.perf_counter_ns()
        try:
            message = pb.ModelInferRequest.FromString(raw)
        except DecodeError:
            raise status(BadRequest("request is not a valid ModelInferRequest message")) from None
        name, version = message.model_name, message.model_version or None

        def admit() -> Quota | None:
            if not self._guard.enabled:  # no keys configured: inference is open, nothing to check
                return None
            return self._admit(call, Access.MODEL, name, version).quota

        async def decode(_: None, model: ServedModel) -> InferRequest:
            return codec.decode_infer_request(message, self._limits)

        try:
            return await self._inference.run(
                name, version, started, None, decode, _encode, admit=admit, hold=call.hold
            )
        except ModelfleetError as exc:
            raise status(exc) from None

    # -- health and metadata ------------------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, call: Call) -> Message:
        self._admit(call, Access.PUBLIC)
        return pb.ServerLiveResponse(live=self._plane.live())

    async def server_ready(self, request: pb.ServerReadyRequest, call: Call) -> Message:
        self._admit(call, Access.PUBLIC)
        return pb.ServerReadyResponse(ready=self._plane.ready())

    async def model_ready(self, request: pb.ModelReadyRequest, call: Call) -> Message:
        """ready=false for a model that is unknown or not ready (tritonclient's is_model_ready
        reads the flag); a malformed name is still INVALID_ARGUMENT. Another tenant's model is
        not ready either, exactly like an unknown one."""
        try:
            self._admit(call, Access.MODEL, request.name, request.version or None)
            self._plane.model_ready(request.name, request.version or None)
        except (NotFound, Unavailable):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: pb.ServerMetadataRequest, call: Call) -> Message:
        self._admit(call, Access.SERVER)
        return codec.server_metadata(self._plane.server_metadata())

    async def model_metadata(self, request: pb.ModelMetadataRequest, call: Call) -> Message:
        self._admit(call, Access.MODEL, request.name, request.version or None)
        return codec.model_metadata(await self._plane.model_metadata(request.name, request.version or None))

    async def model_config(self, request: pb.ModelConfigRequest, call: Call) -> Message:
        self._admit(call, Access.MODEL, request.name, request.version or None)
        return codec.model_config(await self._plane.model_config(request.name, request.version or None))

    async def model_statistics(self, request: pb.ModelStatisticsRequest, call: Call) -> Message:
        """One model's statistics, or without a name every model's the caller may see."""
        name, version = request.name or None, request.version or None
        if name is not None:
            self._admit(call, Access.MODEL, name, version)
            return codec.statistics(self._plane.statistics(name, version))
        who = self._admit(call, Access.SERVER)
        return codec.statistics(who.statistics(self._plane.statistics(None, None)))

    # -- repository extension ----------------------------------------------------------------------------

    async def repository_index(self, request: pb.RepositoryIndexRequest, call: Call) -> Message:
        """Everyone may read the index (a tenant its own part); rescanning the repository for
        added and removed models is control, done only for callers that may control."""
        who = self._admit(call, Access.SERVER)
        return codec.repository_index(
            who.index(await self._plane.repository_index(request.ready, who.control))
        )

    async def repository_model_load(self, request: pb.RepositoryModelLoadRequest, call: Call) -> Message:
        self._admit(call, Access.CONTROL, request.model_name)
        await self._plane.load(request.model_name, codec.parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: pb.RepositoryModelUnloadRequest, call: Call) -> Message:
        self._admit(call, Access.CONTROL, request.model_name)
        await self._plane.unload(request.model_name, codec.parameters(request.parameters))
        return pb.RepositoryModelUnloadResponse()


def _control_call(
    kind: type[Message], handler: Callable[[Any, Call], Awaitable[Message]]
) -> Callable[[bytes, Call], Awaitable[bytes]]:
    """Parse the request, run the handler, serialize its answer, map its errors."""

    async def run(raw: bytes, call: Call) -> bytes:
        try:
            request = kind.FromString(raw)
        except DecodeError:
            raise status(BadRequest(f"request is not a valid {kind.__name__} message")) from None
        try:
            return (await handler(request, call)).SerializeToString()
        except ModelfleetError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error in %s", kind.__name__.removesuffix("Request"))
            error = INTERNAL
        raise status(error)

    return run


async def _encode(response: InferResponse, request: InferRequest) -> bytes:
    return codec.encode_infer_response(response).SerializeToString()
