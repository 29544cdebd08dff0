"""The V2 REST transport: parse, call the data plane, encode, map errors. Nothing else.

`POST .../infer` is served by a lean ASGI handler (no framework routing or request objects on the
hot path); every other route is a small Starlette endpoint. Both share the body reader (413 before
reading past the limit, gzip/deflate decoded within the same limit), the error envelope and the
Guard (server/auth.py): each route says what it touches, and the Guard decides who may.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from modelfleet.config import ServerSettings
from modelfleet.engine.ports import ServedModel
from modelfleet.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelfleetError,
)
from modelfleet.protocol.documents import (
    Document,
    IndexEntry,
    Liveness,
    Readiness,
    error_json,
    to_json,
)
from modelfleet.protocol.rest import (
    HEADER_LENGTH,
    Limits,
    decode_request,
    encode_response,
    header_length,
    is_large,
)
from modelfleet.protocol.v2 import InferRequest, InferResponse
from modelfleet.server.asgi import (
    BodyBudget,
    ClientGone,
    admit,
    error_body,
    headers_of,
    hold_of,
    json_object,
    read_body,
    send_error,
    send_json,
    watch_disconnect,
)
from modelfleet.server.auth import Access, Guard, Principal
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.inference import Inference, not_counted
from modelfleet.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modelfleet.server.metrics import Metrics
from modelfleet.server.openapi import openapi_json
from modelfleet.server.quota import Quota

log = logging.getLogger(__name__)


DECODE_OFF_LOOP_BYTES = 1 << 20  # bodies larger than this are decoded on a thread: the loop stays live
_HEADER_LENGTH = HEADER_LENGTH.encode()
_CONTROL_BODY_LIMIT = 1 << 20
# Encoded separators, NUL and dot-segments in the raw path: refused before any routing.
_BAD_PATH = re.compile(rb"%(2f|5c|00|2e)|\\|/\.\.?(/|$)|\x00", re.IGNORECASE)
_BAD_PATH_MESSAGE = "invalid characters or dot-segments in the URL path"
_PATHS_KEPT = 1024  # raw infer paths remembered as checked and matched (forgotten all at once when full)


class InferEndpoint:
    """`POST /v2/models/{m}[/versions/{v}]/infer` without framework overhead."""

    def __init__(
        self,
        plane: DataPlane,
        settings: ServerSettings,
        guard: Guard,
        metrics: Metrics | None = None,
        budget: BodyBudget | None = None,
    ) -> None:
        self._inference = Inference(plane, metrics.answered if metrics is not None else None)
        # read by each request's _Call
        self.guard = guard
        self.limit = settings.max_body_bytes
        self.limits = Limits.from_settings(settings)
        self.body_timeout_s = settings.body_timeout_s
        self.budget = budget or BodyBudget(settings.max_body_bytes_in_flight)

    @staticmethod
    def match(path: str) -> tuple[str, str | None] | None:
        if not (path.startswith("/v2/models/") and path.endswith("/infer")):
            return None
        parts = path[11:-6].split("/")
        if len(parts) == 1:
            return parts[0], None
        if len(parts) == 3 and parts[1] == "versions":
            return parts[0], parts[2]
        return None

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        started = time.perf_counter_ns()
        call = _Call(self, scope, receive, name, version)
        try:
            payload, binary_header = await self._inference.run(
                name, version, started, call.read, call.decode, _encode,
                admit=call.admit, hold=hold_of(scope), leaving=call.leaving,
            )  # fmt: skip
        except ModelfleetError as exc:
            await send_error(send, exc)
            return
        except ClientGone:
            return
        finally:
            call.share.release()
        if binary_header is None:
            await send_json(send, 200, payload)
            return
        headers_out = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(payload)).encode()),
            (b"inference-header-content-length", str(binary_header).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers_out})
        await send({"type": "http.response.body", "body": payload})


class _Call:
    """One inference request's steps for the infer sequence (server/inference.py), as methods of
    one small object: per request that is cheaper than closures and partials over its state."""

    __slots__ = ("endpoint", "headers", "name", "receive", "scope", "share", "version")

    def __init__(
        self, endpoint: InferEndpoint, scope: Scope, receive: Receive, name: str, version: str | None
    ) -> None:
        self.endpoint = endpoint
        self.scope = scope
        self.receive = receive
        self.name = name
        self.version = version
        self.headers = headers_of(scope)
        self.share = endpoint.budget.share()

    def admit(self) -> Quota | None:
        if self.scope["method"] != "POST":
            raise MethodNotAllowed("inference takes POST", ("POST",))
        guard = self.endpoint.guard
        if not guard.enabled:  # no keys configured: inference is open, nothing to check
            return None
        return admit(guard, Access.MODEL, self.scope, self.headers, self.name, self.version).quota

    def read(self) -> Awaitable[bytes]:
        endpoint = self.endpoint
        return read_body(
            self.receive, self.headers, endpoint.limit, timeout_s=endpoint.body_timeout_s, share=self.share
        )

    async def decode(self, body: bytes, model: ServedModel) -> InferRequest:
        raw_length = self.headers.get(_HEADER_LENGTH)
        json_length = None if raw_length is None else header_length(raw_length.decode("latin-1"), len(body))
        limits = self.endpoint.limits
        if len(body) > DECODE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(decode_request, body, json_length, limits)
        return decode_request(body, json_length, limits)

    def leaving(self, task: asyncio.Task[Any]) -> Awaitable[None]:
        return watch_disconnect(self.receive, task)


async def _encode(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    if is_large(response):
        return await asyncio.to_thread(encode_response, response, request)
    return encode_response(response, request)


# -- control routes ---------------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _ok(doc: Document | list[IndexEntry] | None = None, status: int = 200) -> Response:
    return Response(b"" if doc is None else to_json(doc), status_code=status, media_type="application/json")


async def _json_body(request: Request, max_depth: int) -> dict[str, Any]:
    body = await read_body(request.receive, headers_of(request.scope), _CONTROL_BODY_LIMIT)
    if not body.strip():
        return {}
    return json_object(body, max_depth)


def _parameters(doc: dict[str, Any]) -> dict[str, Any]:
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be a JSON object")
    return params


def _guarded(guard: Guard, path: str, access: Access, handler: Handler, method: str) -> Route:
    """A route that asks the Guard first; the handler finds the caller with _caller(request)."""

    async def endpoint(request: Request) -> Response:
        params = request.path_params
        request.state.caller = admit(
            guard,
            access,
            request.scope,
            headers_of(request.scope),
            params.get("model"),
            params.get("version"),
        )
        return await handler(request)

    return Route(path, endpoint, methods=[method])


def _caller(request: Request) -> Principal:
    """Who made this request, as the Guard found it (for the handlers that filter lists)."""
    caller: Principal = request.state.caller
    return caller


def _control_routes(plane: DataPlane, guard: Guard, max_json_depth: int) -> list[Route]:
    def name_version(request: Request) -> tuple[str, str | None]:
        params = request.path_params
        return params["model"], params.get("version")

    async def live(request: Request) -> Response:
        return _ok(Liveness(live=plane.live()))

    async def ready(request: Request) -> Response:
        is_ready = plane.ready()
        return _ok(Readiness(ready=is_ready), 200 if is_ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _ok(plane.server_metadata())

    async def openapi(request: Request) -> Response:
        return Response(openapi_json(), media_type="application/json")

    async def model_metadata(request: Request) -> Response:
        return _ok(await plane.model_metadata(*name_version(request)))

    async def model_ready(request: Request) -> Response:
        return _ok(plane.model_ready(*name_version(request)))

    async def model_config(request: Request) -> Response:
        return _ok(await plane.model_config(*name_version(request)))

    async def stats_all(request: Request) -> Response:
        return _ok(_caller(request).statistics(plane.statistics(None, None)))

    async def model_stats(request: Request) -> Response:
        return _ok(plane.statistics(*name_version(request)))

    async def repository_index(request: Request) -> Response:
        doc = await _json_body(request, max_json_depth)
        ready_only = doc.get("ready", False)
        if not isinstance(ready_only, bool):
            raise BadRequest("'ready' must be a boolean")
        # everyone may read the index (a tenant its own part); rescanning the repository is control
        who = _caller(request)
        return _ok(who.index(await plane.repository_index(ready_only, refresh=who.control)))

    async def load(request: Request) -> Response:
        doc = await _json_body(request, max_json_depth)
        await plane.load(request.path_params["model"], _parameters(doc))
        return _ok()

    async def unload(request: Request) -> Response:
        doc = await _json_body(request, max_json_depth)
        await plane.unload(request.path_params["model"], _parameters(doc))
        return _ok()

    async def workers(request: Request) -> Response:
        return _ok(await plane.workers())

    async def unload_from(request: Request) -> Response:
        await plane.unload_from(request.path_params["worker"], request.path_params["model"])
        return _ok()

    model = "/v2/models/{model}"
    version = "/v2/models/{model}/versions/{version}"
    public, server, one, control = Access.PUBLIC, Access.SERVER, Access.MODEL, Access.CONTROL
    table: list[tuple[str, Access, Handler, str]] = [
        ("/v2/health/live", public, live, "GET"),
        ("/v2/health/ready", public, ready, "GET"),
        ("/v2", server, server_metadata, "GET"),
        ("/v2/openapi.json", server, openapi, "GET"),  # this API's document (server/openapi.yaml)
        ("/v2/models/stats", server, stats_all, "GET"),
        (model, one, model_metadata, "GET"),
        (version, one, model_metadata, "GET"),
        (model + "/ready", one, model_ready, "GET"),
        (version + "/ready", one, model_ready, "GET"),
        (model + "/config", one, model_config, "GET"),
        (version + "/config", one, model_config, "GET"),
        (model + "/stats", one, model_stats, "GET"),
        (version + "/stats", one, model_stats, "GET"),
        ("/v2/repository/index", server, repository_index, "POST"),
        ("/v2/repository/models/{model}/load", control, load, "POST"),
        ("/v2/repository/models/{model}/unload", control, unload, "POST"),
        ("/v2/workers", Access.OPERATOR, workers, "GET"),
        ("/v2/workers/{worker}/models/{model}/unload", control, unload_from, "POST"),
    ]
    return [_guarded(guard, *row) for row in table]


async def _modelfleet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelfleetError)
    body, extra = error_body(exc)
    return Response(
        body, exc.status, {k.decode(): v.decode() for k, v in extra}, media_type="application/json"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {
        404: f"no route for {request.method} {request.url.path}",
        405: f"{request.method} is not allowed here",
    }
    message = detail.get(exc.status_code, exc.detail)
    headers = {"allow": _allowed(request)} if exc.status_code == 405 else None
    return Response(error_json(message), exc.status_code, headers, media_type="application/json")


def _allowed(request: Request) -> str:
    """Every method some route of this path takes (Starlette's own 405 names only the first
    route's, and several routes share a path, e.g. SageMaker's GET and POST /models)."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return Response(error_json("internal server error"), 500, media_type="application/json")


def _metrics_route(metrics: Metrics, guard: Guard) -> Route:
    async def metrics_text(request: Request) -> Response:
        return Response(await metrics.render(), headers={"content-type": METRICS_CONTENT_TYPE})

    return _guarded(guard, "/metrics", Access.OPERATOR, metrics_text, "GET")


def build_http_app(
    plane: DataPlane,
    settings: ServerSettings,
    lifespan: Any = None,
    metrics: Metrics | None = None,
    guard: Guard | None = None,
) -> ASGIApp:
    """The whole REST surface as one ASGI app; GET /metrics and per-answer counts with `metrics`;
    keys and tenants with `guard` (without one: inference open, control from loopback only)."""
    guard = guard or Guard({})
    budget = BodyBudget(settings.max_body_bytes_in_flight)  # one for every route that reads bodies
    routes = _control_routes(plane, guard, settings.max_json_depth)
    if metrics is not None:
        routes.append(_metrics_route(metrics, guard))
    if settings.sagemaker:
        from modelfleet.server.sagemaker import sagemaker_routes  # imports this module

        routes.extend(sagemaker_routes(plane, settings, metrics, guard, budget))
    control = Starlette(
        routes=routes,
        exception_handlers={
            ModelfleetError: _modelfleet_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    infer = InferEndpoint(plane, settings, guard, metrics, budget)
    answered = metrics.answered if metrics is not None else not_counted
    targets: dict[bytes, tuple[str, str | None]] = {}  # raw infer paths already checked, matched

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            target = targets.get(raw) if raw is not None else None
            if target is None:
                if _BAD_PATH.search(raw or scope["path"].encode()):
                    await send_json(send, 400, error_json(_BAD_PATH_MESSAGE))
                    return
                target = InferEndpoint.match(scope["path"])
                if target is not None and raw is not None:
                    if len(targets) >= _PATHS_KEPT:
                        targets.clear()
                    targets[raw] = target
            if target is not None:
                try:
                    await infer(scope, receive, send, *target)
                except Exception:  # past the infer sequence (which answers its own errors)
                    log.exception("unexpected error on %s", scope["path"])
                    answered(target[0], 500, None)
                    await send_json(send, 500, error_json("internal server error"))
                return
        await control(scope, receive, send)

    return app
