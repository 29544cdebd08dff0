"""Everything prepared before the clock starts: model metadata, signatures and encoded bodies.

Metadata is fetched only when bodies must be synthesized, once per distinct model, or only for
the first model when all models share one signature (`--same-signature`, the default with
`--model-pattern`: fetching 3,000 identical documents would take longer than the run). Models
with the same signature share the same pre-encoded bodies either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import numpy as np
import orjson

from modelfleet.bench.encode import Body, body_from_file, encode
from modelfleet.bench.httpwire import HTTPProtocolError, SetupConnection, auth_headers, model_path
from modelfleet.bench.messages import Workload
from modelfleet.bench.spec import BenchSpec, Protocol, Target
from modelfleet.bench.synth import Signature, Tensor, parse_signature, random_inputs

METADATA_CONNECTIONS = 16


class SetupError(Exception):
    """The run cannot start; the message says why (server unreachable, unknown model, ...)."""


async def _fetch_signature(conn: SetupConnection, target: Target, model: str) -> Signature:
    url = f"http://{target.host_header}{model_path(target, model)}"
    try:
        status, body = await conn.get(model_path(target, model))
    except (OSError, HTTPProtocolError) as exc:
        raise SetupError(f"cannot fetch metadata from {url}: {exc or type(exc).__name__}") from None
    if status != 200:
        raise SetupError(f"GET {url} answered HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SetupError(f"GET {url} did not answer JSON") from None
    try:
        return parse_signature(doc if isinstance(doc, dict) else {}, model)
    except ValueError as exc:
        raise SetupError(str(exc)) from None


async def fetch_signatures(
    target: Target, models: list[str], timeout_s: float, headers: list[tuple[str, str]] | None = None
) -> list[Signature]:
    """The input signature of each model, fetched over a few keep-alive connections (gRPC: one channel)."""
    if target.protocol is Protocol.GRPC:
        from modelfleet.bench.grpcload import fetch_grpc_signatures

        try:
            return await fetch_grpc_signatures(target, models, timeout_s, headers or [])
        except ValueError as exc:
            raise SetupError(str(exc)) from None
    found: dict[str, Signature] = {}
    queue = iter(dict.fromkeys(models))

    async def fetcher() -> None:
        conn = SetupConnection(target, timeout_s, headers or [])
        try:
            for model in queue:  # a shared iterator: each model is taken by one fetcher
                found[model] = await _fetch_signature(conn, target, model)
        finally:
            await conn.close()

    tasks = [asyncio.create_task(fetcher()) for _ in range(min(METADATA_CONNECTIONS, len(models)))]
    try:
        await asyncio.gather(*tasks)  # the first failure is the one reported
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [found[m] for m in models]


def _bodies(spec: BenchSpec, signatures: list[Signature]) -> tuple[list[Body], list[list[int]]]:
    unknown = set(spec.shapes) - {t.name for s in signatures for t in s}
    if unknown:
        raise SetupError(f"--shape names inputs no model has: {', '.join(sorted(unknown))}")
    rng = np.random.default_rng(spec.seed)
    if spec.target.protocol is Protocol.GRPC:
        from modelfleet.bench.grpcload import grpc_body

        encoder: Callable[[list[Tensor]], Body] = grpc_body
    else:
        encoder = partial(encode, encoding=spec.encoding)
    bodies: list[Body] = []
    body_sets: list[list[int]] = []
    for signature in signatures:
        first = len(bodies)
        for _ in range(spec.bodies):
            length = spec.seq_len
            if spec.seq_len_max is not None:  # mixed lengths: one drawn per body
                length = int(rng.integers(spec.seq_len, spec.seq_len_max + 1))
            tensors = random_inputs(signature, rng, spec.batch_size, length, spec.shapes)
            bodies.append(encoder(tensors))
        body_sets.append(list(range(first, len(bodies))))
    return bodies, body_sets


async def build_workload(spec: BenchSpec, log: Callable[[str], None] = lambda _: None) -> Workload:
    models = list(spec.models.expand())
    headers = auth_headers(spec.api_key)
    if spec.input_file is not None:
        try:
            raw = spec.input_file.read_bytes()
        except OSError as exc:
            raise SetupError(f"cannot read --input-file: {exc}") from None
        bodies, body_sets, model_body_set = [body_from_file(raw, spec.encoding)], [[0]], [0] * len(models)
    else:
        described = models[:1] if spec.shares_signature else models
        log(f"fetching metadata of {len(set(described))} model(s)")
        fetched = await fetch_signatures(spec.target, described, spec.timeout_s, headers)
        if spec.shares_signature:
            fetched = fetched * len(models)
        distinct = list(dict.fromkeys(fetched))
        index = {s: i for i, s in enumerate(distinct)}
        bodies, body_sets = _bodies(spec, distinct)
        model_body_set = [index[s] for s in fetched]
        log(f"{len(distinct)} input signature(s), {len(bodies)} request bodies")
    return Workload(
        target=spec.target,
        models=models,
        bodies=bodies,
        body_sets=body_sets,
        model_body_set=model_body_set,
        popularity=spec.popularity,
        zipf_s=spec.zipf_s,
        headers=headers,
    )
