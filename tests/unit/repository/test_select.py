"""The `models` setting: which models one server of a fleet serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelfleet.config import ModelSelection
from modelfleet.errors import NotFound
from modelfleet.repository.folder import FolderRepository
from modelfleet.repository.select import SelectedRepository
from tests.models import adapter, identity


def test_names_and_patterns_are_parsed_from_a_list_or_a_file(tmp_path: Path) -> None:
    assert ModelSelection.parse("") is None
    chosen = ModelSelection.parse("ranker, tenant-0*")
    assert chosen is not None
    assert [n for n in ("ranker", "tenant-01", "tenant-1", "rankers") if chosen.matches(n)] == [
        "ranker",
        "tenant-01",
    ]
    listed = tmp_path / "models.txt"
    listed.write_text("# shard 2\nalpha\n\nbeta?  # two\n")
    from_file = ModelSelection.parse(f"@{listed}")
    assert from_file is not None
    assert [n for n in ("alpha", "beta1", "beta", "gamma") if from_file.matches(n)] == ["alpha", "beta1"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [(",", "selects nothing"), ("a/b", "neither a model name"), ("@/nonexistent/list", "is not a file")],
)
def test_a_bad_selection_is_refused_naming_the_problem(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ModelSelection.parse(value)


def _repo(root: Path) -> FolderRepository:
    for name in ("base", "other", "t-1", "t-2"):
        identity(root / name / "1" / "model.onnx")
    rng = np.random.default_rng(0)
    adapter(root, "head-a", "base", rng.normal(size=(2, 16)), rng.normal(size=2))
    return FolderRepository(root)


def test_the_selected_models_and_the_bases_they_use_are_served(tmp_path: Path) -> None:
    selection = ModelSelection.parse("t-*,head-a")
    assert selection is not None
    repository = SelectedRepository(_repo(tmp_path), selection)
    assert repository.list_models() == ["base", "head-a", "t-1", "t-2"]
    assert repository.fetch("base").name == "base"  # an adapter's base loads as usual
    assert repository.config("t-2") is not None
    with pytest.raises(NotFound, match="model 'other' not found"):
        repository.fetch("other")
    with pytest.raises(NotFound, match="model 'other' not found"):
        repository.config("other")


def test_a_model_that_appears_later_and_matches_is_served(tmp_path: Path) -> None:
    selection = ModelSelection.parse("t-*")
    assert selection is not None
    repository = SelectedRepository(_repo(tmp_path), selection)
    assert repository.list_models() == ["t-1", "t-2"]
    identity(tmp_path / "t-3" / "1" / "model.onnx")
    assert repository.fetch("t-3").name == "t-3"
    assert repository.list_models() == ["t-1", "t-2", "t-3"]
