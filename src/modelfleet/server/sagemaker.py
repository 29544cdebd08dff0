"""SageMaker's container contract over the data plane: /ping, /invocations and the multi-model API.

Served next to the V2 routes when `settings.sagemaker` is on. Handlers only map shapes
(protocol/sagemaker.py) and call the same data plane as the V2 transport: model selection,
loading, memory budget, batching and every tensor check are the data plane's and the V2 codec's.

    GET    /ping                  200 ready / 503 not ready or draining
    POST   /invocations           X-Amzn-SageMaker-Target-Model, else the default model
    POST   /models                {"model_name", "url"}: load (409 loaded, 507 no room, 404 unknown);
                                  a url in the model root is staged first (sagemaker_artefacts.py)
    GET    /models                ?next_page_token=&max_results=: the loaded models, paged
    GET    /models/{name}         the loaded model, or 404
    DELETE /models/{name}         unload, or 404 when not loaded
    POST   /models/{name}/invoke  as /invocations, for that model

Keys and tenants are the V2 routes' Guard (server/auth.py), with the same rules: /ping is public,
invocations and GET /models/{name} reach one model (another tenant's answers like an unknown one),
GET /models lists the caller's models, loading and unloading are model control.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelfleet.config import ServerSettings
from modelfleet.engine.ports import ServedModel
from modelfleet.errors import BadRequest, Conflict, ModelfleetError, NotAcceptable, model_not_found
from modelfleet.protocol import sagemaker as shapes
from modelfleet.protocol.documents import Document, Readiness, to_json
from modelfleet.protocol.rest import HEADER_LENGTH, Limits, encode_response
from modelfleet.protocol.v2 import InferRequest, InferResponse
from modelfleet.repository.names import check_model_name, is_model_name
from modelfleet.server.asgi import BodyBudget, ClientGone, hold_of, json_object, read_body
from modelfleet.server.auth import OPEN, Access, Guard, Principal, presented_key
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.inference import Inference
from modelfleet.server.metrics import Metrics
from modelfleet.server.sagemaker_artefacts import Stager, resolve_inside

CONTROL_BODY_LIMIT = 1 << 20
DEFAULT_PAGE = 1000  # GET /models without max_results
MAX_PAGE = 1000


def _json(doc: Document, status: int = 200) -> Response:
    return Response(to_json(doc), status_code=status, media_type=shapes.JSON_TYPE)


class SageMakerApi:
    """The handlers; state of their own is only the artefact url SageMaker gave for each model."""

    def __init__(
        self,
        plane: DataPlane,
        settings: ServerSettings,
        metrics: Metrics | None,
        guard: Guard,
        budget: BodyBudget,
    ) -> None:
        self._plane = plane
        self._budget = budget
        self._settings = settings
        self._guard = guard
        self._answered = metrics.answered if metrics is not None else None
        self._inference = Inference(plane, self._answered)
        self._limit = settings.max_body_bytes
        self._limits = Limits.from_settings(settings)
        self._root = None if settings.is_object_store else Path(settings.repository).resolve()
        self._urls: dict[str, str] = {}  # model -> the url it was loaded from (for GET /models)
        self._model_root = settings.sagemaker_model_root
        self._stager = None if self._root is None else Stager(self._model_root, self._root)
        self._staging: set[str] = set()  # names whose artefact is being staged and loaded

    def routes(self) -> list[Route]:
        return [
            Route("/ping", self.ping, methods=["GET"]),
            Route("/invocations", self.invocations, methods=["POST"]),
            Route("/models", self.load, methods=["POST"]),
            Route("/models", self.list_models, methods=["GET"]),
            Route("/models/{model}", self.describe, methods=["GET"]),
            Route("/models/{model}", self.unload, methods=["DELETE"]),
            Route("/models/{model}/invoke", self.invoke, methods=["POST"]),
        ]

    def authorize(self, request: Request, access: Access, model: str | None = None) -> Principal:
        """Who makes this request, if they may: every handler calls this before it touches the
        data plane. 401, 403, or for another tenant's model exactly the unknown-model error. The
        address is the TCP peer's (forwarded headers are ignored, as on the V2 routes). Without
        inference keys, model calls are open: nothing is read."""
        if access is Access.PUBLIC or (access is Access.MODEL and not self._guard.enabled):
            return OPEN
        headers = request.headers
        key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        client = request.client
        return self._guard.admit(access, key, client.host if client else None, model)

    # -- health -------------------------------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        self.authorize(request, Access.PUBLIC)
        ready = self._plane.ready()
        return _json(Readiness(ready=ready), 200 if ready else 503)

    # -- inference ----------------------------------------------------------------------------------------

    async def invocations(self, request: Request) -> Response:
        header = request.headers.get(shapes.TARGET_MODEL)
        name = header or ""
        try:
            name = (
                shapes.target_model(header, self._plane.manager.known)
                if header is not None
                else self._default_model(request)
            )
        except ModelfleetError as exc:
            self._count(name, exc.status, None)
            raise
        return await self._invoke(request, name)

    async def invoke(self, request: Request) -> Response:
        return await self._invoke(request, request.path_params["model"])

    def _default_model(self, request: Request) -> str:
        """The configured default model, else the only model the caller can see. The caller is
        asked for first, so nobody without a key learns anything about the repository, and a
        tenant counts only its own models."""
        if self._settings.sagemaker_default_model is not None:
            return self._settings.sagemaker_default_model
        who = self.authorize(request, Access.SERVER)
        names: set[str] = {entry.name for entry in who.index(self._plane.manager.index())}
        if len(names) == 1:
            return names.pop()
        raise BadRequest(
            "name the model in the X-Amzn-SageMaker-Target-Model header: the repository has "
            f"{len(names)} models and no sagemaker_default_model is set"
        )

    async def _invoke(self, request: Request, name: str) -> Response:
        started = time.perf_counter_ns()
        share = self._budget.share()
        headers = request.headers
        json_ok, binary_ok = shapes.acceptable(headers.get("accept"))
        answers: list[tuple[shapes.Answer, bool]] = []  # what decode found the answer must be

        async def read() -> bytes:
            return await read_body(
                request.receive, dict(request.scope["headers"]), self._limit,
                timeout_s=self._settings.body_timeout_s, share=share,
            )  # fmt: skip

        async def decode(body: bytes, model: ServedModel) -> InferRequest:
            json_length = shapes.json_header_length(
                headers.get("content-type"), headers.get(HEADER_LENGTH), len(body)
            )
            batched = bool(model.max_batch_size)
            infer_request, answer = shapes.decode_invocation(
                body, json_length, model.inputs, batched, self._limits
            )
            binary_asked = answer is shapes.Answer.V2 and (
                bool(infer_request.parameters.get("binary_data_output"))
                or any(o.parameters.get("binary_data") for o in infer_request.outputs or ())
            )
            if not (binary_ok if binary_asked else json_ok):
                wanted = shapes.TRITON_BINARY_TYPE if binary_asked else shapes.JSON_TYPE
                raise NotAcceptable(f"the answer would be {wanted}, which Accept does not allow")
            answers.append((answer, batched))
            return infer_request

        async def encode(response: InferResponse, infer_request: InferRequest) -> tuple[bytes, int | None]:
            answer, batched = answers[0]
            if answer is shapes.Answer.PREDICTIONS:
                return shapes.encode_predictions(response, batched), None
            return encode_response(response, infer_request)

        try:
            payload, binary_header = await self._inference.run(
                name, None, started, read, decode, encode,
                admit=lambda: self.authorize(request, Access.MODEL, name).quota,
                hold=hold_of(request.scope),
            )  # fmt: skip
        except ClientGone:
            return Response(status_code=499)  # nobody reads it
        finally:
            share.release()
        if binary_header is None:
            return Response(payload, media_type=shapes.JSON_TYPE)
        return Response(
            payload,
            headers={HEADER_LENGTH: str(binary_header)},
            media_type=shapes.binary_content_type(binary_header),
        )

    def _count(self, name: str, status: int, model: ServedModel | None) -> None:
        """Answers count in /metrics like the V2 infer path's."""
        if self._answered is not None:
            self._answered(name, status, model)

    # -- multi-model control ------------------------------------------------------------------------------

    async def load(self, request: Request) -> Response:
        self.authorize(request, Access.CONTROL)
        shapes.acceptable(request.headers.get("accept"))
        doc = await self._json_body(request)
        name = doc.get("model_name")
        if not isinstance(name, str):
            raise BadRequest("'model_name' must be a string")
        check_model_name(name)
        url = doc.get("url")
        artefact: Path | None = None  # in the model root: staged into the repository first
        if url is not None:
            if not isinstance(url, str):
                raise BadRequest("'url' must be a string")
            artefact = await self._locate(url)
        if self._loaded(name):
            raise Conflict(f"model '{name}' is already loaded")
        if name in self._staging:
            raise Conflict(f"model '{name}' is being loaded")
        if url is not None and artefact is not None:
            await self._load_artefact(name, url, artefact)
        else:
            await self._plane.load(name, {})  # 404 unknown, 507 no room, 400 failed to load
        model_url = url if url is not None else self._default_url(name)
        self._urls[name] = model_url
        return _json(shapes.ModelDescription(model_name=name, model_url=model_url))

    async def list_models(self, request: Request) -> Response:
        """The loaded models the caller may see (a tenant: its own), paged."""
        who = self.authorize(request, Access.SERVER)
        shapes.acceptable(request.headers.get("accept"))
        query = request.query_params
        after = query.get("next_page_token")
        if after is not None and not is_model_name(after):
            raise BadRequest("'next_page_token' is not a token this server gave")
        size = page_size(query.get("max_results"))
        names = sorted({m.name for m in self._plane.manager.loaded() if who.owns(m.name)})
        if after is not None:
            names = [n for n in names if n > after]
        page = names[:size]
        token = page[-1] if len(names) > size else None
        return _json(shapes.ModelList(models=[self._describe(n) for n in page], next_page_token=token))

    async def describe(self, request: Request) -> Response:
        self.authorize(request, Access.MODEL, request.path_params["model"])
        name = check_model_name(request.path_params["model"])
        shapes.acceptable(request.headers.get("accept"))
        if not self._loaded(name):
            raise model_not_found(name)
        return _json(self._describe(name))

    async def unload(self, request: Request) -> Response:
        self.authorize(request, Access.CONTROL)
        name = check_model_name(request.path_params["model"])
        shapes.acceptable(request.headers.get("accept"))
        if not self._loaded(name):
            raise model_not_found(name)
        await self._plane.unload(name, {})
        self._urls.pop(name, None)
        if self._stager is not None and name not in self._staging:
            await asyncio.to_thread(self._stager.remove, name)
        return _json(shapes.Unloaded(model_name=name))

    def _loaded(self, name: str) -> bool:
        record = self._plane.manager.record(name)
        return record is not None and bool(record.ready)

    def _describe(self, name: str) -> shapes.ModelDescription:
        return shapes.ModelDescription(
            model_name=name, model_url=self._urls.get(name) or self._default_url(name)
        )

    def _default_url(self, name: str) -> str:
        return f"{self._settings.repository.rstrip('/')}/{name}"

    async def _locate(self, url: str) -> Path | None:
        """None for a url inside the repository (the model loads from there by name: the url is only
        checked and reported); the artefact's resolved path for a url inside the model root; 400 for
        anything else, a misconfigured endpoint or a probe, refused rather than ignored."""
        if self._root is None:
            if url_in_prefix(url, self._settings.repository):
                return None
        elif await asyncio.to_thread(resolve_inside, self._root, url, True) is not None:
            return None  # resolving follows links: blocking
        artefact = await asyncio.to_thread(resolve_inside, self._model_root, url)
        if artefact is not None and self._stager is not None:
            return artefact
        if artefact is not None:
            raise BadRequest(
                f"url '{_shown(url)}': loading from the model root needs a folder repository to "
                f"stage the model in, not {self._settings.repository}"
            )
        raise BadRequest(
            f"url '{_shown(url)}' is not inside the model repository nor the model root "
            f"{self._model_root} (sagemaker_model_root)"
        )

    async def _load_artefact(self, name: str, url: str, artefact: Path) -> None:
        """Stage the artefact as the repository model `name`, then load it; on any failure the
        staged folder goes again, so nothing is left loaded or lying in the repository."""
        assert self._stager is not None  # _locate finds artefacts only beside a folder repository
        self._staging.add(name)
        try:
            await asyncio.to_thread(self._stager.stage, name, url, artefact)
            try:
                await self._plane.load(name, {})
            except BaseException:
                await asyncio.to_thread(self._stager.remove, name)
                await self._plane.manager.refresh()  # forget the failed record: 404 again, not 503
                raise
        finally:
            self._staging.discard(name)

    async def _json_body(self, request: Request) -> dict[str, Any]:
        shapes.require_json(request.headers.get("content-type"))
        try:
            body = await read_body(request.receive, dict(request.scope["headers"]), CONTROL_BODY_LIMIT)
        except ClientGone:
            raise BadRequest("the request body did not arrive") from None
        return json_object(body, self._limits.max_json_depth)


def url_in_prefix(url: str, prefix: str) -> bool:
    """For s3:// repositories: the url is the prefix or below it, with no dot-segments or tricks."""
    prefix = prefix.rstrip("/")
    if "\x00" in url or "\\" in url or not (url == prefix or url.startswith(prefix + "/")):
        return False
    return not any(part in (".", "..") for part in url[len(prefix) :].split("/"))


def page_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest(f"'max_results' must be an integer from 1 to {MAX_PAGE}, got '{_shown(value)}'")
    return int(value)


def _shown(text: str) -> str:
    return text if len(text) <= 100 and text.isprintable() else repr(text[:100])


def sagemaker_routes(
    plane: DataPlane, settings: ServerSettings, metrics: Metrics | None, guard: Guard, budget: BodyBudget
) -> list[Route]:
    """The SageMaker contract's routes, for build_http_app to serve next to the V2 ones, under the
    same Guard and body budget."""
    return SageMakerApi(plane, settings, metrics, guard, budget).routes()
