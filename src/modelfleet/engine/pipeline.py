"""Ensembles: a request goes through several models of the repository, tensors passed as arrays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import numpy as np

from modelfleet.engine.executor import Job, Post
from modelfleet.engine.model import LoadedModel
from modelfleet.errors import BadRequest, Unavailable
from modelfleet.protocol.v2 import InferInput, InferRequest, RequestedOutput, TensorSpec
from modelfleet.repository.config import ModelConfig, Step

Acquire = Callable[[str, str | None], Awaitable[LoadedModel]]


class Declared:
    """The Runtime side of an ensemble: its declared signature; nothing to run or unload."""

    may_run_inline = False

    def __init__(self, config: ModelConfig) -> None:
        assert config.inputs is not None and config.outputs is not None
        self.inputs: list[TensorSpec] = [t.spec() for t in config.inputs]
        self.outputs: list[TensorSpec] = [t.spec() for t in config.outputs]

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        raise NotImplementedError("an ensemble runs through its steps")

    def unload(self) -> None:
        pass


class Pipeline:
    """Stands where a ModelExecutor stands for an ensemble."""

    def __init__(self, name: str, steps: list[Step], acquire: Acquire, max_queue_size: int) -> None:
        self._name = name
        self._steps = steps
        self._acquire = acquire
        self.max_queue_size = max_queue_size
        self.pending = 0

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        rows: int = 1,
        post: Post | None = None,
        label: str | None = None,
        priority: int = 0,
        timeout_s: float | None = None,
    ) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(loop, inputs, outputs, rows, None, time.perf_counter_ns())
        job.started_ns = job.enqueued_ns
        self.pending += 1
        try:
            tensors = dict(inputs)
            parameters = {"priority": priority} if priority else {}
            if timeout_s is not None:
                parameters["timeout"] = int(timeout_s * 1e6)
            remaining = list(self._steps)
            while remaining:
                ready = [s for s in remaining if all(t in tensors for t in s.inputs.values())]
                results = await asyncio.gather(*(self._step(s, tensors, parameters) for s in ready))
                for produced in results:
                    tensors.update(produced)
                remaining = [s for s in remaining if s not in ready]
            job.future.set_result([tensors[name] for name in outputs])
        finally:
            self.pending -= 1
        job.finished_ns = time.perf_counter_ns()
        return job

    async def _step(
        self, step: Step, tensors: Mapping[str, np.ndarray], parameters: dict[str, int]
    ) -> dict[str, np.ndarray]:
        model = await self._acquire(step.model, step.version)
        feeds = []
        for name, source in step.inputs.items():
            spec = model.inputs.get(name)
            if spec is None:
                raise Unavailable(f"ensemble '{self._name}': step model '{step.model}' has no input '{name}'")
            array = tensors[source]
            feeds.append(InferInput(name, spec.datatype, array.shape, array))
        request = InferRequest(feeds, [RequestedOutput(o) for o in step.outputs], None, dict(parameters))
        try:
            response = await model.infer(request, time.perf_counter_ns())
        except BadRequest as exc:
            raise BadRequest(f"ensemble '{self._name}', step '{step.model}': {exc.message}") from None
        return {step.outputs[o.name]: o.data for o in response.outputs}

    async def close(self) -> None:
        pass
