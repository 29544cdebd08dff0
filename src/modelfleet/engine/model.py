"""A loaded, ready model version: checks requests against its signature and runs them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from modelfleet.engine.cache import ResponseCache
from modelfleet.engine.executor import Executor, Post
from modelfleet.engine.signature import Signature
from modelfleet.engine.stats import ModelStats
from modelfleet.errors import BadRequest, InferenceFailed, ModelfleetError, Overloaded
from modelfleet.protocol.documents import ModelMetadata
from modelfleet.protocol.v2 import InferOutput, InferRequest, InferResponse, TensorSpec
from modelfleet.repository.config import ModelConfig
from modelfleet.runtimes.base import Runtime


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs more, once a request
class PreparedRequest:
    feeds: dict[str, np.ndarray]
    outputs: list[TensorSpec]
    batch_size: int
    length: int | None = None  # the request's length on the shape-bucket axis, before padding


class LoadedModel:
    """A ready model version. An adapter has no executor of its own: its jobs run on its base
    model's executor, asking the base for `head.input` and applying `post` (its head) to its rows."""

    def __init__(
        self,
        name: str,
        version: int,
        config: ModelConfig,
        runtime: Runtime,
        executor: Executor,
        post: Post | None = None,
        nbytes: int = 0,
        load_s: float = 0.0,
        max_in_flight: int | None = None,
        cache: ResponseCache | None = None,
        timeout_s: float = 0.0,
    ) -> None:
        self.signature = signature = Signature(name, version, config)
        self.name = name
        self.version = version
        self.version_str = signature.version_str
        self.config = config
        self.runtime = runtime
        self.executor = executor
        self.post = post
        self.base_outputs = [config.head.input] if config.head is not None else None
        self.nbytes = nbytes  # measured resident bytes (shared blobs not included)
        self.load_s = load_s
        self.in_flight = 0
        self.max_in_flight = max_in_flight  # adapters: their share of the base's queue
        self.cache = cache  # the server's response cache, for models whose config asks for it
        self.timeout_s = timeout_s  # the server's request timeout: default and maximum
        self.buckets = config.shape_buckets
        self.stats = ModelStats()
        self.inputs = signature.inputs
        self.outputs = signature.outputs
        self.all_outputs = list(self.outputs.values())
        self._all_output_names = [spec.name for spec in self.all_outputs]
        self.max_batch_size = signature.max_batch_size

    def expected_wait_ns(self) -> int:
        """Roughly how long a request queued now would wait (queued requests times mean compute)."""
        done = self.stats.success_count
        return self.executor.pending * (self.stats.compute_infer_ns // done) if done else 0

    @property
    def platform(self) -> str:
        return self.signature.platform

    def metadata(self, versions: list[str]) -> ModelMetadata:
        return self.signature.metadata(versions)

    def prepare(self, request: InferRequest) -> PreparedRequest:
        """Check inputs and requested outputs against the signature (400 naming the problem)."""
        feeds: dict[str, np.ndarray] = {}
        batch: int | None = None
        for tensor in request.inputs:
            spec = self.inputs.get(tensor.name)
            if spec is None:
                raise BadRequest(
                    f"unknown input '{tensor.name}' for model '{self.name}'; expected {sorted(self.inputs)}"
                )
            if tensor.name in feeds:
                raise BadRequest(f"input '{tensor.name}' given twice")
            if tensor.datatype != spec.datatype:
                raise BadRequest(
                    f"input '{tensor.name}': datatype {tensor.datatype} does not match the model's {spec.datatype}"
                )
            shape = tensor.shape
            if len(shape) != len(spec.shape) or not _fits(shape, spec.shape):
                raise BadRequest(
                    f"input '{tensor.name}': shape {list(shape)} does not match the model's {list(spec.shape)}"
                )
            if self.max_batch_size:
                if shape[0] > self.max_batch_size:
                    raise BadRequest(
                        f"input '{tensor.name}': batch size {shape[0]} is over the model's "
                        f"max_batch_size {self.max_batch_size}"
                    )
                if batch is not None and shape[0] != batch:
                    raise BadRequest(
                        f"input '{tensor.name}': batch size {shape[0]} differs from the other inputs' {batch}"
                    )
                batch = shape[0]
            feeds[tensor.name] = tensor.data
        if len(feeds) != len(self.inputs):
            missing = [
                f"'{n}' ({s.datatype} {list(s.shape)})" for n, s in self.inputs.items() if n not in feeds
            ]
            raise BadRequest(f"missing input {', '.join(missing)} for model '{self.name}'")
        length = self._pad(feeds) if self.buckets is not None else None
        return PreparedRequest(
            feeds, self._requested_outputs(request), batch if batch is not None else 1, length
        )

    def _pad(self, feeds: dict[str, np.ndarray]) -> int:
        """Pad the bucketed inputs up to their bucket, in place; return the original length."""
        buckets = self.buckets
        assert buckets is not None
        axis = buckets.axis
        lengths = {name: feeds[name].shape[axis] for name in buckets.pad}
        length = int(next(iter(lengths.values())))
        if len(set(lengths.values())) > 1:
            raise BadRequest(
                f"inputs {sorted(lengths)} must have the same length on axis {axis}, got {lengths}"
            )
        size = buckets.bucket(length)
        if size is None:
            raise BadRequest(
                f"model '{self.name}' takes at most {buckets.sizes[-1]} on axis {axis} of "
                f"{sorted(lengths)}, got {length}"
            )
        if size != length:
            for name, value in buckets.pad.items():
                widths = [(0, 0)] * feeds[name].ndim
                widths[axis] = (0, size - length)
                feeds[name] = np.pad(feeds[name], widths, constant_values=value)
        return length

    def _requested_outputs(self, request: InferRequest) -> list[TensorSpec]:
        if not request.outputs:
            return self.all_outputs
        chosen: list[TensorSpec] = []
        for wanted in request.outputs:
            spec = self.outputs.get(wanted.name)
            if spec is None:
                raise BadRequest(
                    f"unknown output '{wanted.name}' requested from model '{self.name}'; "
                    f"expected {sorted(self.outputs)}"
                )
            if spec in chosen:
                raise BadRequest(f"output '{wanted.name}' requested twice")
            chosen.append(spec)
        return chosen

    async def infer(self, request: InferRequest, started_ns: int) -> InferResponse:
        """Run one request; `started_ns` (perf_counter) is when the transport began on it."""
        try:
            t_input = time.perf_counter_ns()
            prepared = self.prepare(request)
            specs = prepared.outputs
            names = self.base_outputs or (
                self._all_output_names if specs is self.all_outputs else [t.name for t in specs]
            )
            key = (
                self.cache.key(self.name, self.version, prepared.feeds, names)
                if self.cache is not None
                else None
            )
            cached = self.cache.get(key) if self.cache is not None and key is not None else None
            if cached is not None:
                return self._from_cache(request, prepared, cached, started_ns)
            t_queued = time.perf_counter_ns()
            if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
                raise Overloaded(f"model '{self.name}' has {self.in_flight} requests queued; try again later")
            self.in_flight += 1
            try:
                job = await self.executor.run(
                    prepared.feeds, names, prepared.batch_size, self.post, self.name,
                    request.priority, self._timeout(request),
                )  # fmt: skip
            finally:
                self.in_flight -= 1
            arrays = job.future.result()
            if self.cache is not None and key is not None:
                self.cache.put(key, arrays)
                self.stats.cache_miss_count += 1
                self.stats.cache_miss_ns += t_queued - t_input
            t_output = time.perf_counter_ns()
            outputs = self._outputs(prepared, arrays)
        except Exception as exc:
            self.stats.record_failure(time.perf_counter_ns() - started_ns)
            if isinstance(exc, ModelfleetError):
                raise
            raise InferenceFailed(f"model '{self.name}' failed: {type(exc).__name__}") from exc
        done = time.perf_counter_ns()
        self.stats.record_success(
            prepared.batch_size,
            job.batch_rows,
            total_ns=done - started_ns,
            queue_ns=job.started_ns - job.enqueued_ns,
            input_ns=t_queued - t_input,
            infer_ns=job.finished_ns - job.started_ns,
            output_ns=done - t_output,
        )
        return InferResponse(self.name, self.version_str, outputs, request.id)

    def _timeout(self, request: InferRequest) -> float | None:
        """The request's `timeout` (microseconds), at most the server's; None: no limit."""
        limit = self.timeout_s or None
        asked = request.timeout_us
        if asked is None or asked == 0:
            return limit
        seconds = asked / 1e6
        return seconds if limit is None else min(seconds, limit)

    def _outputs(self, prepared: PreparedRequest, arrays: list[np.ndarray]) -> list[InferOutput]:
        if prepared.length is not None and self.buckets is not None and self.buckets.outputs:
            cut = self.buckets.outputs
            arrays = [
                np.take(a, range(prepared.length), axis=cut[spec.name]) if spec.name in cut else a
                for spec, a in zip(prepared.outputs, arrays, strict=True)
            ]
        return [
            InferOutput(spec.name, spec.datatype, array.shape, array)
            for spec, array in zip(prepared.outputs, arrays, strict=True)
        ]

    def _from_cache(
        self, request: InferRequest, prepared: PreparedRequest, arrays: list[np.ndarray], started_ns: int
    ) -> InferResponse:
        outputs = self._outputs(prepared, arrays)
        self.stats.cache_hit_count += 1
        self.stats.cache_hit_ns += time.perf_counter_ns() - started_ns
        return InferResponse(self.name, self.version_str, outputs, request.id)


def _fits(shape: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    # a plain loop: about twice as fast as all(<generator>) on the request path
    for got, want in zip(shape, declared, strict=True):  # noqa: SIM110
        if want != -1 and got != want:
            return False
    return True
