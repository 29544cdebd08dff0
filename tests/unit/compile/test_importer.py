from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfleet.compile.errors import CompileError
from modelfleet.compile.importer import import_checkpoints
from modelfleet.repository.folder import FolderRepository
from tests.unit.compile.tiny_bert import head_only_copy, quiet_hf, tiny_bert


def test_head_only_fine_tunes_become_adapters_and_others_full_copies(tmp_path: Path) -> None:
    quiet_hf()
    first = tiny_bert(tmp_path / "src" / "tenant-a")
    sources = [
        first,
        *(head_only_copy(first, tmp_path / "src" / f"tenant-{c}", i) for i, c in enumerate("bcd")),
    ]
    sources.append(tiny_bert(tmp_path / "src" / "tenant-e", seed=7))  # trained whole
    repo = tmp_path / "repo"
    report = import_checkpoints(sources, repo, log=lambda _line: None)
    assert report.base == "tenant-a-base" and report.head == ["classifier.bias", "classifier.weight"]
    assert report.adapters == ["tenant-a", "tenant-b", "tenant-c", "tenant-d"]
    assert report.full_copies == ["tenant-e"]
    assert 0 < report.written_bytes < report.source_bytes
    assert report.saved_bytes == report.source_bytes - report.written_bytes
    folder = FolderRepository(repo)
    assert folder.list_models() == [
        "tenant-a",
        "tenant-a-base",
        "tenant-b",
        "tenant-c",
        "tenant-d",
        "tenant-e",
    ]
    adapter = folder.fetch("tenant-b")
    assert adapter.config.backend == "adapter" and adapter.config.base == "tenant-a-base"
    assert len(adapter.blobs) == 2
    base = folder.fetch("tenant-a-base")
    assert (base.config.outputs or [])[0].shape == [-1, 32]
    assert not [p for p in repo.iterdir() if p.name.startswith(".") and p.name != ".blobs"]


def test_refusals(tmp_path: Path) -> None:
    quiet_hf()
    first = tiny_bert(tmp_path / "a")
    other = tiny_bert(tmp_path / "b")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 3}))
    with pytest.raises(
        CompileError,
        match=r"b is not the architecture of a \(config.json differs in \['num_hidden_layers'\]\)",
    ):
        import_checkpoints([first, other], tmp_path / "repo", log=lambda _line: None)
    with pytest.raises(CompileError, match="come twice"):
        import_checkpoints([first, first], tmp_path / "repo", log=lambda _line: None)
    with pytest.raises(CompileError, match="not a model folder"):
        import_checkpoints([tmp_path], tmp_path / "repo", log=lambda _line: None)
    assert not (tmp_path / "repo").exists() or list((tmp_path / "repo").iterdir()) == []


def test_cli_reports_bytes_saved_and_exit_codes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelfleet.cli import build_app

    quiet_hf()
    first = tiny_bert(tmp_path / "src" / "a")
    second = head_only_copy(first, tmp_path / "src" / "b", 1)
    result = CliRunner().invoke(
        build_app(), ["import", str(first), str(second), "--repo", str(tmp_path / "repo")]
    )
    assert result.exit_code == 0, result.output
    assert "imported 2 checkpoint(s)" in result.output and "2 adapter(s) over a-base" in result.output
    assert "MiB saved" in result.output
    result = CliRunner().invoke(
        build_app(), ["import", str(tmp_path / "src"), "--repo", str(tmp_path / "repo")]
    )
    assert result.exit_code == 1 and "not a model folder" in result.output
