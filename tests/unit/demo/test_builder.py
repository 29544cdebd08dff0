"""The demo repository builder without torch: minilm-sentiment and minilm-base are tiny stand-ins
already in the repository (tests/unit/demo/tiny.py), from which tenants are written and served.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.demo import build_demo_repo
from modelfleet.demo.builder import (
    ADAPTER_CONFIG,
    BASE,
    FULL_COPY_CONFIG,
    IDENTITY,
    SENTIMENT,
    VERSION,
    _needs_build,
    _staged,
)
from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    load_without_weights,
    read_initializers,
)
from modelfleet.demo.tenants import tenant_head
from modelfleet.demo.text import LABEL, TEXT, TOKENIZE
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.protocol.v2 import InferInput, InferRequest
from modelfleet.repository.config import CONFIG_FILENAME, parse_config
from modelfleet.repository.folder import FolderRepository
from modelfleet.repository.weights import MANIFEST
from tests.unit.demo.tiny import FEEDS, HIDDEN, IDS, TUNED, fake_minilm, run

TENANTS = ["tenant-00001", "tenant-00002"]


@pytest.fixture(autouse=True)
def no_torch_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the torch exporter fails: these builds must not need it."""
    monkeypatch.setitem(sys.modules, "modelfleet.demo.minilm", None)


def test_build_writes_identity_and_adapter_tenants_that_the_repository_accepts(tmp_path: Path) -> None:
    fake_minilm(tmp_path)
    lines: list[str] = []
    build_demo_repo(tmp_path, tenants=2, log=lines.append)

    repo = FolderRepository(tmp_path)
    assert repo.list_models() == sorted([IDENTITY, BASE, SENTIMENT, TEXT, TOKENIZE, LABEL, *TENANTS])
    for name in repo.list_models():
        repo.fetch(name)  # config valid, files and blobs present
    identity = parse_config((tmp_path / IDENTITY / CONFIG_FILENAME).read_text(), IDENTITY)
    assert identity.pinned
    for name in TENANTS:
        assert parse_config((tmp_path / name / CONFIG_FILENAME).read_text(), name) == ADAPTER_CONFIG
        assert [p.name for p in (tmp_path / name / VERSION).iterdir()] == [MANIFEST]
    assert "head: {input: embedding, output: logits}" in (tmp_path / TENANTS[0] / CONFIG_FILENAME).read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".blobs"]
    assert lines[:3] == [f"{IDENTITY}: written", f"{SENTIMENT}: present, kept", f"{BASE}: present, kept"]
    assert lines[-2].startswith("tenants: 2/2 written")


def test_full_copies_take_every_shared_weight_from_the_base_blobs(tmp_path: Path) -> None:
    fake_minilm(tmp_path)
    blobs = sorted((tmp_path / ".blobs").glob("*/*"))
    build_demo_repo(tmp_path, tenants=2, full_copies=True, log=lambda _: None)

    repo = FolderRepository(tmp_path)
    base = repo.fetch(BASE)
    for name in TENANTS:
        source = repo.fetch(name)
        assert source.config == FULL_COPY_CONFIG.model_copy(update={"filename": MODEL_FILENAME})
        shared = source.weights[1].tensors
        assert shared == {n: ref for n, ref in base.weights[1].tensors.items() if n not in TUNED}
    assert sorted((tmp_path / ".blobs").glob("*/*")) == blobs


async def test_the_server_runs_adapter_tenants_over_the_base(tmp_path: Path) -> None:
    sentiment, _ = fake_minilm(tmp_path)
    build_demo_repo(tmp_path, tenants=2, log=lambda _: None)
    head = read_initializers(load_without_weights(sentiment / MODEL_FILENAME), HEAD_INITIALIZERS)
    manager = ModelManager(FolderRepository(tmp_path), settings(tmp_path))
    await manager.start()
    try:
        embedding = (await (await manager.acquire(BASE)).infer(request(), 0)).outputs[0].data
        assert embedding.shape == (len(IDS), HIDDEN)
        logits = []
        for index, name in enumerate(TENANTS, 1):
            model = await manager.acquire(name)
            logits.append((await model.infer(request(), 0)).outputs[0].data)
            weight, bias = tenant_head(head["head.weight"], head["head.bias"], index)
            np.testing.assert_allclose(logits[-1], embedding @ weight.T + bias, atol=1e-5)
        assert np.abs(logits[0] - logits[1]).max() > 1e-3
    finally:
        await manager.close()


async def test_the_server_runs_full_copies_with_the_base_blobs(tmp_path: Path) -> None:
    sentiment, _ = fake_minilm(tmp_path)
    build_demo_repo(tmp_path, tenants=1, full_copies=True, log=lambda _: None)
    manager = ModelManager(FolderRepository(tmp_path), settings(tmp_path))
    await manager.start()
    try:
        model = await manager.acquire(TENANTS[0])
        logits = (await model.infer(request(), 0)).outputs[0].data
    finally:
        await manager.close()
    expected = run(sentiment / MODEL_FILENAME)
    assert logits.shape == expected.shape
    assert 1e-3 < np.abs(logits - expected).max() < np.abs(expected).max()


def settings(root: Path) -> ServerSettings:
    return ServerSettings(repository=root, startup_load=StartupLoad.NONE, intra_op_threads=1)


def request() -> InferRequest:
    return InferRequest([InferInput(name, "INT64", value.shape, value) for name, value in FEEDS.items()])


def test_second_build_without_force_changes_nothing(tmp_path: Path) -> None:
    fake_minilm(tmp_path)
    build_demo_repo(tmp_path, tenants=2, log=lambda _: None)
    before = snapshot(tmp_path)
    lines: list[str] = []
    build_demo_repo(tmp_path, tenants=2, log=lines.append)
    assert snapshot(tmp_path) == before
    assert lines[:7] == [
        f"{IDENTITY}: present, kept",
        f"{SENTIMENT}: present, kept",
        f"{BASE}: present, kept",
        f"{TOKENIZE}: present, kept",
        f"{LABEL}: present, kept",
        f"{TEXT}: present, kept",
        "tenants: 2 present, kept",
    ]


def test_more_tenants_later_adds_only_the_new_ones_to_the_same_blob_store(tmp_path: Path) -> None:
    fake_minilm(tmp_path)
    build_demo_repo(tmp_path, tenants=1, log=lambda _: None)
    blobs = set((tmp_path / ".blobs").glob("*/*"))
    lines: list[str] = []
    build_demo_repo(tmp_path, tenants=3, log=lines.append)
    assert "tenants: 1 present, kept" in lines
    assert any(line.startswith("tenants: 2/2 written") for line in lines)
    added = set((tmp_path / ".blobs").glob("*/*")) - blobs
    assert len(added) == 4  # two new tenants' weight and bias
    assert [p.name for p in tmp_path.rglob(".blobs")] == [".blobs"]


def test_tenants_of_the_other_kind_are_kept_and_named(tmp_path: Path) -> None:
    fake_minilm(tmp_path)
    build_demo_repo(tmp_path, tenants=1, log=lambda _: None)
    lines: list[str] = []
    build_demo_repo(tmp_path, tenants=2, full_copies=True, log=lines.append)
    assert "tenants: 1 present, kept (1 of them adapters; --force rebuilds them)" in lines
    assert [(tmp_path / name / VERSION / MODEL_FILENAME).is_file() for name in TENANTS] == [False, True]


def test_an_incomplete_model_folder_is_refused_unless_forced(tmp_path: Path) -> None:
    fake_minilm(tmp_path)
    (tmp_path / IDENTITY / VERSION).mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"identity is in the way.*pass --force"):
        build_demo_repo(tmp_path, log=lambda _: None)
    assert _needs_build(tmp_path / IDENTITY, [(MODEL_FILENAME,)], force=True)


def test_an_old_tenant_layout_is_refused_with_both_layouts_named(tmp_path: Path) -> None:
    fake_minilm(tmp_path)
    (tmp_path / TENANTS[0] / VERSION).mkdir(parents=True)
    (tmp_path / TENANTS[0] / CONFIG_FILENAME).write_text("")
    (tmp_path / TENANTS[0] / VERSION / MODEL_FILENAME).write_text("")
    with pytest.raises(
        FileExistsError, match=r"config.yaml, 1/model.onnx, .* or config.yaml, 1/weights.json"
    ):
        build_demo_repo(tmp_path, tenants=1, log=lambda _: None)


def test_a_new_repository_appears_only_when_complete(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(ImportError):  # the MiniLM models cannot be built: identity was already written
        build_demo_repo(tmp_path / "repo", log=lines.append)
    assert lines[0] == f"{IDENTITY}: written"
    assert lines[1].startswith(f"{SENTIMENT}, {BASE}: exporting")
    assert list(tmp_path.iterdir()) == []


def test_a_file_at_the_repository_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        build_demo_repo(tmp_path / "repo", log=lambda _: None)


def test_a_failed_build_leaves_neither_the_model_nor_its_staging_folder(tmp_path: Path) -> None:
    def fail_half_way() -> None:
        with _staged(tmp_path / "model") as staging:
            (staging / CONFIG_FILENAME).write_text("")
            raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        fail_half_way()
    assert list(tmp_path.iterdir()) == []


def test_staging_replaces_an_existing_model_whole(tmp_path: Path) -> None:
    (tmp_path / "model" / "2").mkdir(parents=True)
    with _staged(tmp_path / "model") as staging:
        (staging / "1").mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["1"]


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}
