from pathlib import Path

import pytest

from modelfleet.config import ServerSettings
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.errors import BadRequest
from modelfleet.protocol.documents import (
    AllVersions,
    ConfigTensor,
    LatestVersions,
    ModelReady,
    VersionPolicy,
)
from modelfleet.repository.folder import FolderRepository
from modelfleet.server.dataplane import DataPlane


@pytest.fixture
async def plane(settings: ServerSettings, repo: Path):  # type: ignore[no-untyped-def]
    plane = DataPlane(ModelManager(FolderRepository(repo), settings))
    yield plane
    await plane.manager.close()


async def test_ready_only_after_start_and_not_while_draining(plane: DataPlane) -> None:
    assert plane.live()
    assert not plane.ready()
    await plane.manager.start()
    assert plane.ready()
    plane.draining = True
    assert not plane.ready()
    assert plane.live()


async def test_config_reports_the_version_policy_and_dims_without_batch(plane: DataPlane) -> None:
    await plane.manager.start()
    config = await plane.model_config("versioned", None)
    assert config.version_policy == VersionPolicy(all=AllVersions())
    assert config.input == [ConfigTensor(name="input", data_type="TYPE_FP32", dims=[2])]
    assert (await plane.model_config("identity", "1")).version_policy == VersionPolicy(
        latest=LatestVersions(num_versions=1)
    )
    assert (await plane.model_config("strings", None)).input[0].data_type == "TYPE_STRING"


async def test_load_refuses_inline_files_before_config(plane: DataPlane) -> None:
    await plane.manager.start()
    with pytest.raises(BadRequest, match="model files cannot be uploaded"):
        await plane.load("auto", {"config": "{}", "file:1/model.onnx": "AA=="})
    with pytest.raises(BadRequest, match="config overrides are not accepted"):
        await plane.load("auto", {"config": "{}"})
    await plane.load("auto", {"unknown": 1})
    assert plane.model_ready("auto", None) == ModelReady(name="auto", version="1", ready=True)


async def test_statistics_for_all_one_and_one_version(plane: DataPlane) -> None:
    await plane.manager.start()
    everything = plane.statistics(None, None).model_stats
    assert ("versioned", "2") in {(m.name, m.version) for m in everything}
    assert [m.version for m in plane.statistics("versioned", None).model_stats] == ["1", "2"]
    assert [m.version for m in plane.statistics("versioned", "2").model_stats] == ["2"]


async def test_polling_picks_up_models_added_to_the_repository(tmp_path: Path) -> None:
    import asyncio
    import contextlib

    from modelfleet.server.app import _poll
    from tests.models import identity
    from tests.waiting import until

    identity(tmp_path / "first" / "1" / "model.onnx")
    manager = ModelManager(FolderRepository(tmp_path), ServerSettings(repository=tmp_path))
    await manager.start()
    poller = asyncio.create_task(_poll(manager, 0.02))
    identity(tmp_path / "second" / "1" / "model.onnx")
    try:
        await until(lambda: manager.known("second"), "the poller found the new model")
    finally:
        poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    assert manager.known("second")
    await manager.close()
