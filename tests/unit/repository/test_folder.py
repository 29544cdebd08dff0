from pathlib import Path

import pytest

from modelfleet.errors import ModelLoadError, NotFound
from modelfleet.repository.folder import FolderRepository
from tests.models import identity, write_config


def test_lists_valid_model_folders_only(tmp_path: Path) -> None:
    for name in ("b", "a", ".blobs", "bad name"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert FolderRepository(tmp_path).list_models() == ["a", "b"]


def test_fetch_infers_backend_and_versions(tmp_path: Path) -> None:
    identity(tmp_path / "m" / "1" / "model.onnx")
    identity(tmp_path / "m" / "3" / "model.onnx")
    (tmp_path / "m" / "notes").mkdir()
    source = FolderRepository(tmp_path).fetch("m")
    assert source.config.backend == "onnxruntime"
    assert source.config.filename == "model.onnx"
    assert source.versions == [1, 3]
    assert source.model_file(3) == (tmp_path / "m" / "3" / "model.onnx").resolve()


def test_fetch_errors(tmp_path: Path) -> None:
    repo = FolderRepository(tmp_path)
    with pytest.raises(NotFound, match="model 'absent' not found"):
        repo.fetch("absent")
    with pytest.raises(NotFound):
        repo.fetch("../etc")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no version folders"):
        repo.fetch("empty")
    (tmp_path / "unknown" / "1").mkdir(parents=True)
    (tmp_path / "unknown" / "1" / "model.bin").write_bytes(b"x")
    with pytest.raises(
        ModelLoadError, match="no backend given in config.yaml and no known model file \\(model.onnx\\)"
    ):
        repo.fetch("unknown")
    write_config(tmp_path / "badcfg", {"max_batch_size": "lots"})
    (tmp_path / "badcfg" / "1").mkdir()
    with pytest.raises(ModelLoadError, match="config.yaml: max_batch_size: Input should be a valid integer"):
        repo.fetch("badcfg")


def test_version_folder_linking_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    identity(tmp_path / "elsewhere" / "model.onnx")
    (root / "m").mkdir(parents=True)
    (root / "m" / "1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ModelLoadError, match="'m/1' leads outside the model repository"):
        FolderRepository(root).fetch("m")


def test_model_file_linking_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    secret = identity(tmp_path / "elsewhere.onnx")
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").symlink_to(secret)
    with pytest.raises(ModelLoadError, match="'m/1/model.onnx' leads outside the model repository"):
        FolderRepository(root).fetch("m")


def test_config_not_utf8_or_too_big(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "config.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        FolderRepository(tmp_path).fetch("m")
    (tmp_path / "m" / "config.yaml").write_bytes(b"#" * (2 << 20))
    with pytest.raises(ModelLoadError, match="larger than"):
        FolderRepository(tmp_path).fetch("m")


def test_repository_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FolderRepository(tmp_path / "nope")
