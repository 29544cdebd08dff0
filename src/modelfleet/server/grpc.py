"""The V2 gRPC transport (`inference.GRPCInferenceService`): parse, call the data plane, encode,
map errors. Nothing else; it runs on grpc.aio in the same event loop as the HTTP server.

Every method takes and returns raw bytes (no serializers registered), so that a malformed message
is a clear INVALID_ARGUMENT and each error goes through the one status table below. The message
size limit is max_body_bytes, enforced by gRPC itself before a larger message is read. Keys and
tenants are the HTTP front's Guard (server/auth.py): the key comes from the call's metadata
(`authorization: Bearer KEY` or `x-api-key: KEY`), the client address from `context.peer()`.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
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
from modelfleet.server.auth import OPEN, Access, Guard, Principal, presented_key
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.logs import begin_request, end_request, set_request_id
from modelfleet.server.metrics import Metrics

log = logging.getLogger(__name__)

# The one mapping from an error's HTTP status to a gRPC status code.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED,
    HTTPStatus.NOT_ACCEPTABLE: grpc.StatusCode.INVALID_ARGUMENT,  # SageMaker's; listed for completeness
    HTTPStatus.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,  # SageMaker's, likewise
    HTTPStatus.TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.INTERNAL_SERVER_ERROR: grpc.StatusCode.INTERNAL,
    HTTPStatus.NOT_IMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    HTTPStatus.INSUFFICIENT_STORAGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_INTERNAL = ModelfleetError("internal server error")

Context = grpc.aio.ServicerContext[bytes, bytes]
Metadata = Iterable[tuple[str, str | bytes]]


def status_code(status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(status, grpc.StatusCode.INTERNAL)


async def abort(context: Context, exc: ModelfleetError) -> NoReturn:
    """End the call with the error's gRPC code and the same message text as the HTTP answer."""
    if isinstance(exc, Overloaded):
        context.set_trailing_metadata((("retry-after", str(exc.retry_after_s)),))
    await context.abort(status_code(exc.status), exc.message)


def peer_host(peer: str) -> str | None:
    """The client's IP address in a `context.peer()` string; None when there is none to trust.

    gRPC core writes `ipv4:127.0.0.1:5000`, `ipv6:%5B::1%5D:5000` (older releases `ipv6:[::1]:5000`)
    and `unix:...`. Anything else (a Unix socket, vsock, a format of some future release, a string
    that does not parse) is None, which the Guard takes as not loopback: a peer we cannot read
    never gets loopback's control rights.
    """
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv4":
        host, sep, port = rest.rpartition(":")
    elif scheme == "ipv6":
        rest = urllib.parse.unquote(rest)
        if not rest.startswith("["):
            return None
        host, sep, port = rest[1:].partition("]:")
    else:
        return None
    if not sep or not port.isdigit():
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version != (4 if scheme == "ipv4" else 6):
        return None
    return host


def admit(
    guard: Guard,
    access: Access,
    metadata: Metadata | None,
    peer: str,
    name: str | None = None,
    version: str | None = None,
) -> Principal:
    """The Guard's verdict for one call: its key from the metadata (`authorization: Bearer KEY`,
    else `x-api-key: KEY`, the first of each), its address from the peer string."""
    authorization: str | bytes | None = None
    api_key: str | bytes | None = None
    for key, value in metadata or ():
        if key == "authorization" and authorization is None:
            authorization = value
        elif key == "x-api-key" and api_key is None:
            api_key = value
    return guard.admit(access, presented_key(authorization, api_key), peer_host(peer), name, version)


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

    def _admit(
        self, context: Context, access: Access, name: str | None = None, version: str | None = None
    ) -> Principal:
        """Who makes this call, if they may: 401, 403, or for another tenant's model exactly the
        unknown-model error. Without inference keys, model calls are open: nothing is read."""
        if access is Access.PUBLIC or (access is Access.MODEL and not self._guard.enabled):
            return OPEN
        return admit(self._guard, access, context.invocation_metadata(), context.peer(), name, version)

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
            if self._guard.enabled:  # no keys configured: inference is open, nothing to check
                self._admit(context, Access.MODEL, name, message.model_version or None)
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
        reads the flag); a malformed name is still INVALID_ARGUMENT. Another tenant's model is
        not ready either, exactly like an unknown one."""
        try:
            self._admit(context, Access.MODEL, request.name, request.version or None)
            self._plane.model_ready(request.name, request.version or None)
        except (NotFound, Unavailable):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Message:
        self._admit(context, Access.SERVER)
        return pb.ServerMetadataResponse(**self._plane.server_metadata())

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Message:
        self._admit(context, Access.MODEL, request.name, request.version or None)
        return codec.model_metadata(await self._plane.model_metadata(request.name, request.version or None))

    async def model_config(self, request: pb.ModelConfigRequest, context: Context) -> Message:
        self._admit(context, Access.MODEL, request.name, request.version or None)
        return codec.model_config(await self._plane.model_config(request.name, request.version or None))

    async def model_statistics(self, request: pb.ModelStatisticsRequest, context: Context) -> Message:
        """One model's statistics, or without a name every model's the caller may see."""
        name, version = request.name or None, request.version or None
        if name is not None:
            self._admit(context, Access.MODEL, name, version)
            return codec.statistics(self._plane.statistics(name, version))
        who = self._admit(context, Access.SERVER)
        return codec.statistics(who.statistics(self._plane.statistics(None, None)))

    # -- repository extension ----------------------------------------------------------------------------

    async def repository_index(self, request: pb.RepositoryIndexRequest, context: Context) -> Message:
        """Everyone may read the index (a tenant its own part); rescanning the repository for
        added and removed models is control, done only for callers that may control."""
        who = self._admit(context, Access.SERVER)
        return codec.repository_index(
            who.index(await self._plane.repository_index(request.ready, who.control))
        )

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
