"""The gRPC target: KServe V2's `inference.GRPCInferenceService` through grpcio's asyncio client.

Requests are serialized once, before the clock: protobuf messages concatenate, so a model's
request is its `model_name` field's bytes followed by the shared inputs' bytes, sent as they are
(no serializer per call). Each user is a task with one call in flight; all share one channel, as a
gRPC client does (HTTP/2 streams on one connection). Needs grpcio (`pip install grpcio`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from time import perf_counter_ns
from typing import Any

import numpy as np

from modelfleet.bench.client import DRAIN_S, build_plan_items
from modelfleet.bench.encode import Body
from modelfleet.bench.messages import ShareJob, ShareResult
from modelfleet.bench.record import Recorder
from modelfleet.bench.spec import Target
from modelfleet.bench.synth import Signature, Tensor, parse_signature
from modelfleet.protocol.datatypes import DATATYPES, serialize_bytes

SERVICE = "/inference.GRPCInferenceService"
GRPC_TYPE = "application/grpc"
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def _grpc() -> Any:
    try:
        import grpc
    except ImportError:
        raise ImportError("the gRPC target needs grpcio: pip install 'modelfleet[bench]'") from None
    return grpc


def _pb() -> Any:
    from modelfleet.protocol.grpc import grpc_service_pb2

    return grpc_service_pb2


def grpc_body(tensors: list[Tensor]) -> Body:
    """A ModelInferRequest without its model name: the inputs, their bytes in raw_input_contents."""
    pb = _pb()
    raws = []
    for t in tensors:
        if t.datatype == "BYTES":
            raws.append(serialize_bytes(t.data))
        else:
            dtype = DATATYPES[t.datatype].dtype.newbyteorder("<")
            raws.append(np.ascontiguousarray(t.data, dtype=dtype).tobytes())
    message = pb.ModelInferRequest(
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))
            for t in tensors
        ],
        raw_input_contents=raws,
    )
    return Body(message.SerializeToString(), GRPC_TYPE)


def model_prefix(model: str) -> bytes:
    """The `model_name` field of a ModelInferRequest, to put before a `grpc_body`."""
    serialized: bytes = _pb().ModelInferRequest(model_name=model).SerializeToString()
    return serialized


def call_metadata(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """HTTP-style headers as gRPC metadata (lower-case keys)."""
    return tuple((k.lower(), v) for k, v in headers)


async def fetch_grpc_signatures(
    target: Target, models: list[str], timeout_s: float, headers: list[tuple[str, str]]
) -> list[Signature]:
    """Each model's input signature from ModelMetadata; ValueError naming the model when refused."""
    grpc, pb = _grpc(), _pb()
    address = f"{target.host}:{target.port}"
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(
            f"{SERVICE}/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        found: dict[str, Signature] = {}
        for model in dict.fromkeys(models):
            try:
                answer = await call(
                    pb.ModelMetadataRequest(name=model), timeout=timeout_s, metadata=call_metadata(headers)
                )
            except grpc.aio.AioRpcError as exc:
                raise ValueError(
                    f"gRPC ModelMetadata of '{model}' at {address} failed: {exc.code().name} {exc.details()}"
                ) from None
            doc = {
                "name": answer.name,
                "inputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]}
                    for t in answer.inputs
                ],
            }
            found[model] = parse_signature(doc, model)
    return [found[m] for m in models]


def grpc_error(code: Any) -> str:
    return f"grpc_{code.name.lower()}"


class GrpcShare:
    """One process's part of a closed-loop gRPC run (the `Share` of client.py, for gRPC)."""

    def __init__(self, job: ShareJob) -> None:
        self.job = job
        prefixes = [model_prefix(m) for m in job.workload.models]
        items = build_plan_items(job.workload, job.seed)
        workload = job.workload
        requests = [
            [prefixes[m] + workload.bodies[b].content for b in workload.body_sets[s]]
            for m, s in enumerate(workload.model_body_set)
        ]
        self.plan: Iterator[tuple[int, bytes]] = itertools.cycle([(m, requests[m][v]) for m, v in items])
        self.record = Recorder(job)
        self._users: set[asyncio.Task[None]] = set()

    async def run(self) -> ShareResult:
        grpc = _grpc()
        target = self.job.workload.target
        async with grpc.aio.insecure_channel(
            f"{target.host}:{target.port}", options=CHANNEL_OPTIONS
        ) as channel:
            infer = channel.unary_unary(f"{SERVICE}/ModelInfer")  # bytes in, bytes out
            metadata = call_metadata(self.job.workload.headers)
            await self.record.drive(lambda slot: self._start_user(slot, infer, metadata, grpc))
            _, pending = await asyncio.wait(self._users, timeout=DRAIN_S) if self._users else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return self.record.result()

    def _start_user(self, slot: int, infer: Any, metadata: tuple[tuple[str, str], ...], grpc: Any) -> None:
        task = asyncio.create_task(self._user(slot, infer, metadata, grpc))
        self._users.add(task)
        task.add_done_callback(self._users.discard)

    async def _user(self, slot: int, infer: Any, metadata: tuple[tuple[str, str], ...], grpc: Any) -> None:
        record, timeout_s = self.record, self.job.timeout_s
        try:
            while perf_counter_ns() < record.end_ns and slot < record.users:
                model, request = next(self.plan)
                sent = perf_counter_ns()
                try:
                    await infer(request, timeout=timeout_s, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    record.error(grpc_error(exc.code()), model, perf_counter_ns())
                else:
                    record.ok(model, sent, perf_counter_ns())
        finally:
            record.running.discard(slot)
