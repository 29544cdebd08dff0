"""Making the served copies of a model version (a runtime and its executor, an adapter over its
base, an ensemble's pipeline) and unloading them again; the sizes a load is expected to take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelfleet.config import ServerSettings
from modelfleet.engine import loading
from modelfleet.engine.cache import ResponseCache
from modelfleet.engine.executor import Batching, ComputeShare, ModelExecutor
from modelfleet.engine.model import LoadedModel
from modelfleet.engine.pipeline import Acquire, Declared, Pipeline
from modelfleet.errors import ModelLoadError
from modelfleet.repository.config import ModelConfig, complete_config
from modelfleet.repository.folder import ModelSource
from modelfleet.runtimes.adapter import Head

BLOB = "blob:"  # residency keys of weight blobs; model names can't contain ':'
CPU_MAX_ROWS = 16  # measured: on CPU, batches past 8-16 rows add latency and no throughput
GPU_MAX_ROWS = 64


class Builder:
    """Builds LoadedModels on the load pool (within the load timeout) and retires them on its
    unload pool; `known` and `step_model` let ensembles check and reach their steps."""

    def __init__(
        self,
        settings: ServerSettings,
        pool: ThreadPoolExecutor,
        cache: ResponseCache,
        share: ComputeShare | None,
        known: Callable[[str], bool],
        step_model: Acquire,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._unload_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unload")
        self._cache = cache
        self._share = share
        self._known = known
        self._step_model = step_model

    async def build(
        self,
        source: ModelSource,
        number: int,
        shared: dict[str, Any],
        base: LoadedModel | None,
        estimate: int,
    ) -> LoadedModel:
        """One version's served copy (`estimate`: its expected bytes, the floor of its measure)."""
        loop = asyncio.get_running_loop()
        settings = self._settings
        if source.config.backend == "ensemble":
            return self._ensemble(source, number)
        if source.config.backend == "python" and not settings.python_models:
            raise ModelLoadError(
                "python models are off: start the server with --python-models to run model.py code"
            )
        if base is not None:
            future = loop.run_in_executor(
                self._pool, loading.build_adapter, source, number, shared, base.config
            )
        else:
            future = loop.run_in_executor(
                self._pool,
                loading.build,
                source,
                number,
                shared,
                settings.intra_op_threads,
                settings.default_max_batch_size,
            )
        try:
            built = await asyncio.wait_for(asyncio.shield(future), settings.load_timeout_s)
        except TimeoutError:
            future.add_done_callback(self._discard_late_load)
            raise ModelLoadError(f"loading took longer than {settings.load_timeout_s:g} s") from None
        except asyncio.CancelledError:
            future.add_done_callback(self._discard_late_load)
            raise
        # The measured size, but never less than declared or estimated: a load that reuses memory
        # freed just before it measures less than the model holds.
        floor = source.config.memory_bytes or (estimate if base is None else 0)
        nbytes = max(built.nbytes, floor)
        cache = self._cache if built.config.response_cache else None
        if base is not None:
            assert isinstance(built.runtime, Head)
            return LoadedModel(
                source.name, number, built.config, built.runtime, base.executor, built.runtime.apply,
                nbytes, built.load_s, max_in_flight=max(1, settings.max_queue_size // 4),
                cache=cache, timeout_s=settings.request_timeout_s,
            )  # fmt: skip
        executor = ModelExecutor(
            built.runtime,
            f"{source.name}/{number}",
            settings.max_queue_size,
            batching(built.config, built.gpu),
            instances=built.config.instances,
            max_queue_wait_ns=int(settings.max_queue_wait_s * 1e9),
            inline_ns=int(inline_max_us(built.config, settings) * 1e3),
            share=self._share,
        )
        return LoadedModel(
            source.name, number, built.config, built.runtime, executor, None, nbytes, built.load_s,
            cache=cache, timeout_s=settings.request_timeout_s,
        )  # fmt: skip

    def _ensemble(self, source: ModelSource, number: int) -> LoadedModel:
        config = source.config
        assert config.steps is not None
        for step in config.steps:
            if step.model == source.name:
                raise ModelLoadError(f"ensemble step '{step.model}' is the ensemble itself")
            if not self._known(step.model):
                raise ModelLoadError(f"ensemble step model '{step.model}' is not in the repository")
        declared = Declared(config)
        settings = self._settings
        completed = complete_config(
            config, declared.inputs, declared.outputs, settings.default_max_batch_size
        )
        pipeline = Pipeline(source.name, config.steps, self._step_model, settings.max_queue_size)
        return LoadedModel(
            source.name, number, completed, declared, pipeline,
            cache=self._cache if completed.response_cache else None, timeout_s=settings.request_timeout_s,
        )  # fmt: skip

    def _discard_late_load(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is None:
            self._unload_pool.submit(loading.unload, future.result().runtime)

    async def retire_all(self, models: list[LoadedModel]) -> None:
        """Drain each model's executor and unload its runtime (adapters share their base's executor)."""
        await asyncio.gather(*(self._retire(m) for m in models))

    async def _retire(self, model: LoadedModel) -> None:
        if model.post is None:
            await model.executor.close()
        await asyncio.get_running_loop().run_in_executor(self._unload_pool, loading.unload, model.runtime)

    def close(self) -> None:
        """After the last retire: wait for the unloads under way."""
        self._unload_pool.shutdown(wait=True)


def estimate(source: ModelSource, selected: list[int]) -> int:
    """Bytes a load is expected to take before it is measured (shared blobs not included)."""
    if source.config.memory_bytes is not None:
        return source.config.memory_bytes * len(selected)
    total = 0
    for number in selected:
        path = source.model_file(number)
        size = path.stat().st_size if path.is_file() else 0
        total += int(size * 1.3) + (1 << 20 if source.config.base is None else 4096)
    return total


def blob_sizes(source: ModelSource, selected: list[int]) -> dict[str, int]:
    """Residency keys and sizes of the weight blobs the selected versions share."""
    return {
        BLOB + ref.blob: ref.nbytes
        for v in selected
        if v in source.weights
        for ref in source.weights[v].tensors.values()
    }


def inline_max_us(config: ModelConfig, settings: ServerSettings) -> float:
    """The model's own opt-in to inline execution, else the server's (0 by default: off)."""
    return settings.inline_max_us if config.inline_max_us is None else config.inline_max_us


def batching(config: ModelConfig, gpu: bool = False) -> Batching | None:
    policy = config.dynamic_batching
    if not policy.enabled or not config.max_batch_size:
        return None
    rows = policy.max_batch_size or min(config.max_batch_size, GPU_MAX_ROWS if gpu else CPU_MAX_ROWS)
    preferred = tuple(size for size in policy.preferred_batch_sizes if size <= rows)
    return Batching(max_rows=rows, max_queue_delay_ns=policy.max_queue_delay_us * 1000, preferred=preferred)
