import asyncio
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.engine.records import State
from modelfleet.errors import (
    BadRequest,
    InsufficientMemory,
    ModelLoadError,
    NotFound,
    Overloaded,
    Unavailable,
)
from modelfleet.protocol.documents import TensorMetadata
from modelfleet.protocol.v2 import InferInput, InferRequest
from modelfleet.repository.folder import FolderRepository
from modelfleet.runtimes import base
from tests.hold import HeldRuns
from tests.models import adapter, identity, shared_matmul, standard_repo, write_config
from tests.waiting import entered, until

MiB = 1 << 20


def manager_for(root: Path, **overrides: object) -> ModelManager:
    options = {"startup_load": StartupLoad.ALL, "memory_budget": "1GiB", "room_wait_s": 0} | overrides
    settings = ServerSettings(repository=root, intra_op_threads=1, **options)  # type: ignore[arg-type]
    return ModelManager(FolderRepository(root), settings)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return standard_repo(tmp_path / "repo")


def states(manager: ModelManager) -> dict[str, str]:
    return {f"{e.name}/{e.version or '-'}": e.state for e in manager.index()}


def loaded(manager: ModelManager) -> set[str]:
    """Names of resident models, read without touching them (resident() counts as a use)."""
    return {m.name for m in manager.loaded()}


def row(x: list[float], name: str = "input") -> InferRequest:
    data = np.array([x], dtype=np.float32)
    return InferRequest([InferInput(name, "FP32", data.shape, data)])


# -- start, resolve, explicit load / unload ----------------------------------------------------------


async def test_start_all_loads_everything_and_keeps_broken_models_apart(root: Path) -> None:
    manager = manager_for(root)
    await manager.start()
    assert manager.started
    s = states(manager)
    assert s["identity/1"] == "READY"
    assert s["broken/1"] == "UNAVAILABLE"
    assert s["versioned/1"] == s["versioned/2"] == "READY"
    broken = next(e for e in manager.index() if e.name == "broken")
    assert "Protobuf parsing failed" in broken.reason
    assert manager.resident("identity").version == 1  # type: ignore[union-attr]
    assert manager.resident("versioned").version == 2  # type: ignore[union-attr]
    assert manager.resident("versioned", "1").version == 1  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="model 'nope' not found"):
        manager.resident("nope")
    with pytest.raises(NotFound, match="model 'identity' \\(version '9'\\) not found"):
        manager.resident("identity", "9")
    with pytest.raises(BadRequest, match="invalid model name"):
        manager.resident("../identity")
    with pytest.raises(BadRequest, match="invalid model version"):
        manager.resident("identity", "1.5")
    with pytest.raises(NotFound, match="model 'identity' has no version alias 'x'"):
        manager.resident("identity", "x")
    assert "broken" not in {e.name for e in manager.index(ready_only=True)}
    await manager.close()


async def test_start_pinned_loads_only_pinned_models(tmp_path: Path) -> None:
    identity(tmp_path / "pinned" / "1" / "model.onnx")
    write_config(tmp_path / "pinned", {"pinned": True})
    identity(tmp_path / "lazy" / "1" / "model.onnx")
    manager = manager_for(tmp_path, startup_load=StartupLoad.PINNED)
    await manager.start()
    assert manager.resident("pinned") is not None
    assert manager.resident("lazy") is None
    assert states(manager)["lazy/-"] == "UNAVAILABLE"
    await manager.close()


async def test_explicit_unload_holds_the_model_out_until_loaded_again(root: Path) -> None:
    manager = manager_for(root)
    await manager.start()
    model = manager.resident("identity")
    await manager.unload("identity")
    assert states(manager)["identity/1"] == "UNAVAILABLE"
    with pytest.raises(NotFound, match="model 'identity' is not loaded \\(it was unloaded"):
        manager.resident("identity")
    with pytest.raises(NotFound, match="is not loaded"):
        await manager.acquire("identity", "1")
    assert model is not None
    assert model.executor.pending == 0
    await manager.load("identity")
    assert manager.resident("identity") is not None
    with pytest.raises(NotFound):
        await manager.unload("never-there")
    await manager.close()


async def test_models_added_after_start_and_refresh(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE)
    await manager.start()
    identity(root / "late" / "1" / "model.onnx")
    await manager.load("late")
    assert manager.resident("late") is not None
    identity(root / "later" / "1" / "model.onnx")
    assert not manager.known("later")
    await manager.refresh()
    assert manager.known("later")
    shutil.rmtree(root / "later")
    await manager.refresh()
    assert not manager.known("later")
    with pytest.raises(NotFound):
        await manager.load("absent")
    assert not manager.known("absent")
    await manager.close()


async def test_reload_picks_up_a_new_version_and_retires_the_old_one(root: Path) -> None:
    manager = manager_for(root)
    await manager.start()
    first = manager.resident("identity")
    identity(root / "identity" / "2" / "model.onnx")
    await manager.load("identity")
    assert manager.resident("identity").version == 2  # type: ignore[union-attr]
    assert states(manager)["identity/1"] == "UNAVAILABLE"
    with pytest.raises(NotFound, match="model .identity. version 1 is not served by the version policy"):
        manager.resident("identity", "1") or await manager.acquire("identity", "1")
    assert first is not None
    assert first.executor.pending == 0
    await manager.close()


async def test_failed_reload_keeps_the_serving_copy(root: Path) -> None:
    manager = manager_for(root)
    await manager.start()
    serving = manager.resident("auto")
    (root / "auto" / "1" / "model.onnx").write_bytes(b"corrupt")
    with pytest.raises(ModelLoadError):
        await manager.load("auto")
    assert manager.resident("auto") is serving
    assert states(manager)["auto/1"] == "READY"
    await manager.close()


async def test_bad_config_and_policy_selecting_nothing(tmp_path: Path) -> None:
    identity(tmp_path / "m" / "1" / "model.onnx")
    write_config(tmp_path / "m", {"version_policy": {"specific": [5]}})
    write_config(tmp_path / "c", {"inputs": "nope"})
    (tmp_path / "c" / "1").mkdir()
    manager = manager_for(tmp_path)
    await manager.start()
    reasons = {e.name: e.reason for e in manager.index()}
    assert reasons["m"] == "the version policy selects none of the versions [1]"
    assert reasons["c"].startswith("config.yaml: inputs: Input should be a valid list")
    await manager.close()


# -- on demand, single flight, back-off, timeout ----------------------------------------------------------


async def test_concurrent_requests_for_an_unloaded_model_cause_one_load(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE)
    await manager.start()
    assert manager.resident("identity") is None
    models = await asyncio.gather(*(manager.acquire("identity") for _ in range(20)))
    assert len({id(m) for m in models}) == 1
    record = manager.record("identity")
    assert record is not None
    assert record.counters.loads == 1
    assert record.counters.cold_starts == 1
    assert manager.memory().cold_starts == 1
    await manager.close()


async def test_a_failed_load_is_retried_after_a_back_off(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE)
    await manager.start()
    results = await asyncio.gather(*(manager.acquire("broken") for _ in range(5)), return_exceptions=True)
    assert all(
        isinstance(r, Unavailable) and "model 'broken' failed to load: ONNX Runtime" in str(r)
        for r in results
    )
    record = manager.record("broken")
    assert record is not None
    assert record.counters.load_failures == 1  # five waiters, one load
    with pytest.raises(
        Unavailable, match="model 'broken' failed to load: ONNX Runtime cannot load .*next attempt in"
    ):
        await manager.acquire("broken")
    assert record.counters.load_failures == 1
    record.retry_at = 0.0  # the back-off has passed
    with pytest.raises(Unavailable, match="failed to load"):
        await manager.acquire("broken")
    assert record.counters.load_failures == 2
    assert record.retry_at - time.monotonic() > 1.0  # doubled
    await manager.close()


async def test_load_timeout_fails_the_model_and_frees_the_late_runtime(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unloaded = []
    gone = threading.Event()
    finish = threading.Event()  # the load goes on past its timeout until the test lets it finish
    real = base.load_runtime

    def slow(spec: base.LoadSpec) -> base.Runtime:
        finish.wait(10)
        runtime = real(spec)
        original = runtime.unload

        def unload() -> None:
            unloaded.append(spec.name)
            original()
            gone.set()

        runtime.unload = unload  # type: ignore[method-assign]
        return runtime

    monkeypatch.setattr("modelfleet.engine.loading.load_runtime", slow)
    manager = manager_for(root, startup_load=StartupLoad.NONE, load_timeout_s=0.05)
    await manager.start()
    try:
        with pytest.raises(ModelLoadError, match="loading took longer than 0.05 s"):
            await manager.load("identity")
        with pytest.raises(Unavailable, match="loading took longer"):
            await manager.acquire("identity")
    finally:
        finish.set()  # the late runtime arrives now
    await entered(gone, "the late runtime was unloaded")
    assert unloaded == ["identity"]
    await manager.close()


# -- memory budget and eviction --------------------------------------------------------------------------


def sized_repo(root: Path, names: list[str], nbytes: int, pinned: tuple[str, ...] = ()) -> Path:
    for name in names:
        identity(root / name / "1" / "model.onnx")
        write_config(root / name, {"memory_bytes": nbytes, "pinned": name in pinned})
    return root


async def test_least_recently_used_idle_models_are_evicted_to_make_room(tmp_path: Path) -> None:
    sized_repo(tmp_path, ["a", "b", "c", "d"], 10 * MiB)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE, memory_budget="35MiB")
    await manager.start()
    for name in ("a", "b", "c"):
        await manager.acquire(name)
    await manager.acquire("a")  # a is now more recent than b
    await manager.acquire("d")  # needs 10 MiB: b, the least recently used, goes
    assert loaded(manager) == set("acd")
    assert states(manager)["b/1"] == "EVICTED"
    b = next(e for e in manager.index() if e.name == "b")
    assert b.reason == "evicted to make room for 'd'"
    assert b.evictions == 1
    assert manager.residency.used_bytes <= manager.residency.budget_bytes
    await manager.acquire("b")  # comes back on demand, evicting c (now the LRU)
    assert loaded(manager) == set("abd")
    assert manager.memory().evictions == 2
    await manager.close()


async def test_pinned_and_busy_models_are_never_evicted_and_507_says_the_sizes(tmp_path: Path) -> None:
    sized_repo(tmp_path, ["pinned", "busy", "new"], 10 * MiB, pinned=("pinned",))
    manager = manager_for(tmp_path, startup_load=StartupLoad.PINNED, memory_budget="25MiB")
    await manager.start()
    model = await manager.acquire("busy")
    model.in_flight += 1  # a request in flight on it
    with pytest.raises(
        InsufficientMemory,
        match="model 'new' needs 10.0 MiB but the memory budget is 25.0 MiB, 20.0 MiB of it in use \\(10.0 MiB pinned",
    ):
        await manager.acquire("new")
    assert manager.resident("pinned") is not None
    assert manager.resident("busy") is model
    model.in_flight -= 1
    await manager.acquire("new")  # now busy is idle and goes
    assert manager.resident("busy") is None
    assert manager.resident("pinned") is not None
    await manager.close()


async def test_a_model_larger_than_the_budget_gets_507(tmp_path: Path) -> None:
    sized_repo(tmp_path, ["huge"], 64 * MiB)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE, memory_budget="32MiB")
    await manager.start()
    with pytest.raises(
        InsufficientMemory, match="model 'huge' needs 64.0 MiB but the memory budget is 32.0 MiB"
    ):
        await manager.acquire("huge")
    await manager.close()


# -- adapters over a shared base, shared weight blobs ----------------------------------------------------


def adapter_repo(root: Path, tenants: int) -> Path:
    identity(root / "base" / "1" / "model.onnx", "FP32", ("batch", 4))
    rng = np.random.default_rng(0)
    for i in range(tenants):
        adapter(root, f"t{i}", "base", rng.standard_normal((2, 4)), rng.standard_normal(2))
    return root


async def test_adapters_run_their_head_over_the_base_and_batch_together(tmp_path: Path) -> None:
    adapter_repo(tmp_path, 3)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE)
    await manager.start()
    heads = [await manager.acquire(f"t{i}") for i in range(3)]
    assert manager.resident("base") is not None  # loaded for them
    base_model = manager.resident("base")
    assert base_model is not None
    assert all(h.executor is base_model.executor for h in heads)
    assert heads[0].metadata(["1"]).outputs == [TensorMetadata(name="logits", datatype="FP32", shape=[-1, 2])]
    x = [0.5, -1.0, 2.0, 0.25]
    responses = await asyncio.gather(*(h.infer(row(x), 0) for h in heads))
    for h, response in zip(heads, responses, strict=True):
        head = h.runtime
        expected = np.array([x], np.float32) @ head.weight.T + head.bias  # type: ignore[attr-defined]
        np.testing.assert_allclose(response.outputs[0].data, expected, rtol=1e-6)
    # the three requests were queued together and ran as one batch of three rows through the base
    assert {h.stats.as_dict(h.name, "1")["batch_stats"][0]["batch_size"] for h in heads} == {3}
    await manager.close()


async def test_a_base_stays_under_busy_adapters_and_unloading_it_takes_them_along(tmp_path: Path) -> None:
    adapter_repo(tmp_path, 2)
    write_config(tmp_path / "base", {"memory_bytes": 10 * MiB})
    identity(tmp_path / "other" / "1" / "model.onnx")
    write_config(tmp_path / "other", {"memory_bytes": 10 * MiB})
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE, memory_budget="15MiB")
    await manager.start()
    t0 = await manager.acquire("t0")
    t0.in_flight += 1  # a request in flight on the adapter keeps its base too
    with pytest.raises(InsufficientMemory):
        await manager.acquire("other")
    assert loaded(manager) == {"base", "t0"}
    t0.in_flight -= 1
    await manager.unload("base")
    assert loaded(manager) == set()
    t0_entry = next(e for e in manager.index() if e.name == "t0")
    assert (t0_entry.state, t0_entry.reason) == ("UNAVAILABLE", "base model 'base' was unloaded")
    with pytest.raises(
        Unavailable,
        match="model 't0' failed to load: base model 'base' is not in the repository or not loaded",
    ):
        await manager.acquire("t0")
    await manager.acquire("other")  # the room is free now
    await manager.close()


async def test_adapter_errors_name_the_problem(tmp_path: Path) -> None:
    adapter_repo(tmp_path, 1)
    adapter(tmp_path, "wrong-input", "base", np.ones((2, 4)), np.ones(2), head_input="nope")
    adapter(tmp_path, "wrong-size", "base", np.ones((2, 5)), np.ones(2))
    adapter(tmp_path, "orphan", "missing-base", np.ones((2, 4)), np.ones(2))
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE)
    await manager.start()
    with pytest.raises(Unavailable, match="head.input 'nope' is not an output of base model 'base'"):
        await manager.acquire("wrong-input")
    with pytest.raises(
        Unavailable,
        match="head weight \\[2, 5\\] and bias \\[2\\] do not fit base output 'output' \\[-1, 4\\]",
    ):
        await manager.acquire("wrong-size")
    with pytest.raises(Unavailable, match="base model 'missing-base' is not in the repository"):
        await manager.acquire("orphan")
    assert (await manager.acquire("t0")).name == "t0"
    await manager.close()


async def test_shared_weight_blobs_are_held_once_and_counted_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((512, 512)).astype(np.float32)  # 1 MiB: memory-mapped
    biases = {name: rng.standard_normal(512).astype(np.float32) for name in ("copy-a", "copy-b")}
    for name, bias in biases.items():
        shared_matmul(tmp_path, name, weight, bias)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE)
    await manager.start()
    models = [await manager.acquire(name) for name in biases]
    assert manager.memory().blob_bytes == weight.nbytes
    assert [k for k in manager.residency.names() if k.startswith("blob:")] == [
        f"blob:{k}" for k in manager.blobs._arrays
    ]
    assert len(manager.blobs._arrays) == 1
    x = rng.standard_normal((1, 512)).astype(np.float32)
    for model, bias in zip(models, biases.values(), strict=True):
        out = (await model.infer(InferRequest([InferInput("x", "FP32", x.shape, x)]), 0)).outputs[0].data
        np.testing.assert_allclose(out, x @ weight + bias, rtol=1e-4, atol=1e-4)
    await manager.close()


async def test_eviction_does_not_wait_for_or_break_requests_in_flight(tmp_path: Path) -> None:
    sized_repo(tmp_path, ["a", "b"], 10 * MiB)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE, memory_budget="15MiB")
    await manager.start()
    a = await manager.acquire("a")
    x = [float(i) for i in range(16)]
    with HeldRuns(a.runtime) as held:
        request = asyncio.create_task(a.infer(row(x), 0))
        await held.started()
        with pytest.raises(InsufficientMemory):
            await manager.acquire("b")  # a is busy: it is not evicted
        held.release()
        response = await request
    assert response.outputs[0].data.tolist() == [x]
    await manager.acquire("b")
    assert manager.resident("a") is None
    await manager.close()


# -- versions behind one name: traffic split and aliases -------------------------------------------------


def ab_repo(root: Path, config: dict[str, object]) -> Path:
    for v in (1, 2):
        identity(root / "ab" / str(v) / "model.onnx")
    write_config(root / "ab", {"version_policy": {"all": True}} | config)
    return root


async def test_traffic_split_sends_unversioned_requests_by_weight(tmp_path: Path) -> None:
    ab_repo(tmp_path, {"traffic": {1: 90, 2: 10}})
    manager = manager_for(tmp_path)
    await manager.start()
    counts = {1: 0, 2: 0}
    for _ in range(2000):
        model = manager.resident("ab")
        assert model is not None
        counts[model.version] += 1
    assert 0.86 < counts[1] / 2000 < 0.94
    assert manager.resident("ab", "2").version == 2  # type: ignore[union-attr]
    await manager.close()


async def test_aliases_name_versions_and_unknown_aliases_are_404(tmp_path: Path) -> None:
    ab_repo(tmp_path, {"aliases": {"stable": 1, "canary": 2}})
    manager = manager_for(tmp_path)
    await manager.start()
    assert manager.resident("ab", "stable").version == 1  # type: ignore[union-attr]
    assert manager.resident("ab", "canary").version == 2  # type: ignore[union-attr]
    assert manager.resident("ab").version == 2  # type: ignore[union-attr]
    with pytest.raises(NotFound, match="model 'ab' has no version alias 'beta'"):
        manager.resident("ab", "beta")
    with pytest.raises(BadRequest, match="invalid model version 'Beta!'"):
        manager.resident("ab", "Beta!")
    await manager.close()


async def test_routing_to_versions_the_policy_does_not_serve_is_refused(tmp_path: Path) -> None:
    ab_repo(tmp_path, {"version_policy": {"latest": 1}, "traffic": {1: 50, 2: 50}})
    manager = manager_for(tmp_path)
    await manager.start()
    reason = next(e.reason for e in manager.index() if e.name == "ab")
    assert reason == "traffic names version(s) [1], which the version policy does not serve (it serves [2])"
    await manager.close()


async def test_concurrent_churn_keeps_the_books_straight(tmp_path: Path) -> None:
    """Many requests for many models under a small budget: no request fails, and every eviction
    matches an earlier load (a victim chosen twice, or a loading model evicted, would break this)."""
    import random

    sized_repo(tmp_path, [f"m{i:02d}" for i in range(30)], 4 * MiB)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE, memory_budget="20MiB", room_wait_s=10)
    await manager.start()
    failures: list[str] = []

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            name = f"m{rng.randrange(30):02d}"
            try:
                model = manager.resident(name) or await manager.acquire(name)
                await model.infer(row([0.5] * 16), 0)
            except Exception as exc:
                failures.append(f"{name}: {exc!r}")

    await asyncio.gather(*(client(seed) for seed in range(8)))
    memory = manager.memory()
    assert failures == []
    assert memory.loads - memory.evictions == memory.resident_models == len(manager.residency)
    assert manager.residency.used_bytes <= manager.residency.budget_bytes
    await manager.close()


# -- regressions from review -------------------------------------------------------------------------


async def test_reloading_a_base_takes_its_adapters_along_and_they_come_back_over_the_new_copy(
    tmp_path: Path,
) -> None:
    adapter_repo(tmp_path, 1)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE)
    await manager.start()
    t0 = await manager.acquire("t0")
    before = (await t0.infer(row([1.0, 2.0, 3.0, 4.0]), 0)).outputs[0].data
    await manager.load("base")  # an explicit reload
    assert states(manager)["t0/1"] == "EVICTED"
    t0 = await manager.acquire("t0")
    base = manager.peek("base")
    assert base is not None
    assert t0.executor is base.executor
    after = (await t0.infer(row([1.0, 2.0, 3.0, 4.0]), 0)).outputs[0].data
    np.testing.assert_array_equal(before, after)
    entry = manager.residency.get("base")
    assert entry is not None
    assert entry.dependents == {"t0"}
    await manager.close()


async def test_a_load_never_evicts_the_blobs_it_needs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((512, 512)).astype(np.float32)  # a 1 MiB shared blob
    for name in ("a", "b"):
        shared_matmul(tmp_path, name, weight, rng.standard_normal(512))
        write_config(tmp_path / name, {"memory_bytes": 2 * MiB})
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE, memory_budget="3.5MiB")
    await manager.start()
    await manager.acquire("a")
    b = await manager.acquire("b")  # a must go; the blob both use must stay
    assert loaded(manager) == {"b"}
    x = rng.standard_normal((1, 512)).astype(np.float32)
    assert (await b.infer(InferRequest([InferInput("x", "FP32", x.shape, x)]), 0)).outputs[0].data.shape == (
        1,
        512,
    )
    assert manager.residency.used_bytes <= manager.residency.budget_bytes
    await manager.close()


async def test_an_explicit_load_and_a_request_at_the_same_time_load_once(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE)
    await manager.start()
    explicit = asyncio.create_task(manager.load("identity"))
    record = manager.record("identity")
    assert record is not None
    await until(lambda: record.status.state == State.LOADING, "the explicit load began")
    await asyncio.gather(explicit, manager.acquire("identity"))
    record = manager.record("identity")
    assert record is not None
    assert record.counters.loads == 1
    await manager.close()


async def test_an_alias_works_before_the_first_load(tmp_path: Path) -> None:
    ab_repo(tmp_path, {"aliases": {"stable": 1}})
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE)
    await manager.start()
    assert (await manager.acquire("ab", "stable")).version == 1
    await manager.close()


async def test_eviction_leaves_versions_the_policy_does_not_serve_alone(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE, memory_budget="2.5MiB")
    await manager.start()
    await manager.acquire("identity")  # version 1
    identity(root / "identity" / "2" / "model.onnx")
    await manager.load("identity")  # now version 2; version 1 is not served any more
    await manager.acquire("auto")
    await manager.acquire("add_sub")  # evicts identity, the least recently used
    assert states(manager)["identity/2"] == "EVICTED"
    assert states(manager)["identity/1"] == "UNAVAILABLE"
    loads = manager.memory().loads
    with pytest.raises(NotFound, match="model 'identity' version 1 is not served by the version policy"):
        await manager.acquire("identity", "1")
    assert manager.memory().loads == loads  # refused without loading anything
    await manager.close()


async def test_waiting_requests_give_up_after_the_load_timeout(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE, load_timeout_s=0.2)
    await manager.start()
    real_fetch = manager._repository.fetch
    finish = threading.Event()  # the fetch goes on past the load timeout until the test lets it end

    def slow_fetch(name: str):  # type: ignore[no-untyped-def]
        finish.wait(10)
        return real_fetch(name)

    monkeypatch.setattr(manager._repository, "fetch", slow_fetch)
    started = time.monotonic()
    try:
        with pytest.raises(
            Unavailable, match="model 'identity' (is still loading|failed to load: fetching took longer)"
        ):
            await manager.acquire("identity")
        assert time.monotonic() - started < 2
    finally:
        finish.set()
    await manager.close()


async def test_an_adapter_has_its_own_share_of_the_base_queue(tmp_path: Path) -> None:
    adapter_repo(tmp_path, 2)
    manager = manager_for(tmp_path, startup_load=StartupLoad.NONE, max_queue_size=8)
    await manager.start()
    t0, t1 = await manager.acquire("t0"), await manager.acquire("t1")
    t0.in_flight = t0.max_in_flight or 0  # t0 has used up its share
    with pytest.raises(Overloaded, match="model 't0' has 2 requests queued"):
        await t0.infer(row([1.0, 2.0, 3.0, 4.0]), 0)
    assert (await t1.infer(row([1.0, 2.0, 3.0, 4.0]), 0)).model_name == "t1"  # t1 is not affected
    t0.in_flight = 0
    await manager.close()
