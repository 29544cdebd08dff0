import asyncio
import shutil
import time
from pathlib import Path

import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.errors import BadRequest, ModelLoadError, NotFound, Unavailable
from modelfleet.repository.folder import FolderRepository
from modelfleet.runtimes import base
from tests.models import identity, standard_repo, write_config


def manager_for(root: Path, **overrides: object) -> ModelManager:
    settings = ServerSettings(repository=root, intra_op_threads=1, **overrides)  # type: ignore[arg-type]
    return ModelManager(FolderRepository(root), settings)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return standard_repo(tmp_path / "repo")


def states(manager: ModelManager) -> dict[str, str]:
    return {f"{e['name']}/{e.get('version', '-')}": e["state"] for e in manager.index()}


async def test_start_loads_everything_and_keeps_broken_models_apart(root: Path) -> None:
    manager = manager_for(root)
    await manager.start()
    assert manager.started
    s = states(manager)
    assert s["identity/1"] == "READY"
    assert s["broken/1"] == "UNAVAILABLE"
    assert s["versioned/1"] == s["versioned/2"] == "READY"
    broken = next(e for e in manager.index() if e["name"] == "broken")
    assert "Protobuf parsing failed" in broken["reason"]
    assert manager.resolve("identity").version == 1
    assert manager.resolve("versioned").version == 2
    assert manager.resolve("versioned", "1").version == 1
    with pytest.raises(
        Unavailable, match="model 'broken' is unavailable: version 1: ONNX Runtime cannot load"
    ):
        manager.resolve("broken")
    with pytest.raises(NotFound, match="model 'nope' not found"):
        manager.resolve("nope")
    with pytest.raises(NotFound, match="model 'identity' \\(version '9'\\) not found"):
        manager.resolve("identity", "9")
    with pytest.raises(BadRequest, match="invalid model name"):
        manager.resolve("../identity")
    with pytest.raises(BadRequest, match="invalid model version"):
        manager.resolve("identity", "x")
    assert [e["name"] for e in manager.index(ready_only=True)].count("broken") == 0
    await manager.close()


async def test_startup_none_then_explicit_load_and_unload(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE)
    await manager.start()
    assert states(manager)["identity/-"] == "UNAVAILABLE"
    with pytest.raises(NotFound, match="model 'identity' is not loaded"):
        manager.resolve("identity")
    await manager.load("identity")
    model = manager.resolve("identity")
    await manager.unload("identity")
    assert states(manager)["identity/1"] == "UNAVAILABLE"
    with pytest.raises(NotFound, match="is not loaded"):
        manager.resolve("identity")
    with pytest.raises(NotFound, match="is not loaded"):
        manager.resolve("identity", "1")
    assert model.executor.pending == 0
    with pytest.raises(NotFound):
        await manager.unload("never-there")
    await manager.close()


async def test_load_of_a_model_added_after_start_and_refresh(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE)
    await manager.start()
    identity(root / "late" / "1" / "model.onnx")
    await manager.load("late")
    assert manager.resolve("late").name == "late"
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
    first = manager.resolve("identity")
    identity(root / "identity" / "2" / "model.onnx")
    await manager.load("identity")
    assert manager.resolve("identity").version == 2
    assert states(manager)["identity/1"] == "UNAVAILABLE"
    with pytest.raises(NotFound, match="model 'identity' version 1 is not loaded"):
        manager.resolve("identity", "1")
    assert first.executor.pending == 0
    await manager.close()


async def test_failed_reload_keeps_the_serving_copy(root: Path) -> None:
    manager = manager_for(root)
    await manager.start()
    serving = manager.resolve("auto")
    (root / "auto" / "1" / "model.onnx").write_bytes(b"corrupt")
    await manager.load("auto")  # the old copy keeps serving, so this is not an error
    assert manager.resolve("auto") is serving
    entry = next(e for e in manager.index() if e["name"] == "auto")
    assert entry["state"] == "READY"
    assert "reload failed, previous copy serving" in entry["reason"]
    await manager.close()


async def test_bad_config_and_policy_selecting_nothing(tmp_path: Path) -> None:
    identity(tmp_path / "m" / "1" / "model.onnx")
    write_config(tmp_path / "m", {"version_policy": {"specific": [5]}})
    write_config(tmp_path / "c", {"inputs": "nope"})
    (tmp_path / "c" / "1").mkdir()
    manager = manager_for(tmp_path)
    await manager.start()
    reasons = {e["name"]: e["reason"] for e in manager.index()}
    assert reasons["m"] == "the version policy selects none of the versions [1]"
    assert reasons["c"].startswith("config.yaml: inputs: Input should be a valid list")
    await manager.close()


async def test_load_timeout_fails_the_model_and_frees_the_late_runtime(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unloaded = []
    real = base.load_runtime

    def slow(spec: base.LoadSpec) -> base.Runtime:
        time.sleep(0.3)
        runtime = real(spec)
        original = runtime.unload

        def unload() -> None:
            unloaded.append(spec.name)
            original()

        runtime.unload = unload  # type: ignore[method-assign]
        return runtime

    monkeypatch.setattr("modelfleet.engine.lifecycle.load_runtime", slow)
    manager = manager_for(root, startup_load=StartupLoad.NONE, load_timeout_s=0.05)
    await manager.start()
    with pytest.raises(ModelLoadError, match="loading took longer than 0.05 s"):
        await manager.load("identity")
    with pytest.raises(Unavailable, match="loading took longer"):
        manager.resolve("identity")
    for _ in range(50):
        if unloaded:
            break
        await asyncio.sleep(0.05)
    assert unloaded == ["identity"]
    await manager.close()


async def test_concurrent_loads_of_one_model_run_one_after_another(root: Path) -> None:
    manager = manager_for(root, startup_load=StartupLoad.NONE)
    await manager.start()
    await asyncio.gather(*(manager.load("identity") for _ in range(5)))
    assert manager.resolve("identity").version == 1
    assert len(manager.loaded("identity")) == 1
    await manager.close()
