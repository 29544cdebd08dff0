from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.compile.errors import CompileError
from modelfleet.compile.writer import split_out, staged_model


def test_a_new_model_then_a_new_version(tmp_path: Path) -> None:
    with staged_model(tmp_path, "m") as staged:
        assert staged.version == 1 and staged.folder.name.startswith(".m.")
        (staged.version_dir / "model.onnx").write_text("one")
        (staged.folder / "config.yaml").write_text("# one\n")
        assert not (tmp_path / "m").exists()
    assert (tmp_path / "m" / "1" / "model.onnx").read_text() == "one"
    with staged_model(tmp_path, "m") as staged:
        assert staged.version == 2
        (staged.version_dir / "model.onnx").write_text("two")
        (staged.folder / "config.yaml").write_text("# two\n")
    assert (tmp_path / "m" / "config.yaml").read_text() == "# two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(CompileError, match="m/2 exists already"), staged_model(tmp_path, "m", version=2):
        pass


def test_a_failure_leaves_the_repository_as_it_was(tmp_path: Path) -> None:
    def half_written() -> None:
        with staged_model(tmp_path, "m") as staged:
            (staged.version_dir / "model.onnx").write_text("half")
            raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        half_written()
    assert list(tmp_path.iterdir()) == []


def test_model_names_are_checked() -> None:
    assert split_out(Path("/r/good-name_1.0")) == (Path("/r"), "good-name_1.0")
    with pytest.raises(CompileError, match="is not a model name"):
        split_out(Path("/r/bad name"))
