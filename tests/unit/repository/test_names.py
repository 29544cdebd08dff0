from pathlib import Path

import pytest

from modelfleet.errors import BadRequest, ModelLoadError
from modelfleet.repository.names import check_model_name, check_version, inside, is_model_name


@pytest.mark.parametrize("name", ["identity", "tenant-00001", "a", "A.b_c-9", "x" * 128])
def test_valid_names(name: str) -> None:
    assert check_model_name(name) == name
    assert is_model_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "a..b",
        "../etc",
        "a/b",
        "a\\b",
        "/abs",
        ".hidden",
        "-dash",
        "nul\x00",
        "%2e%2e",
        "a b",
        "x" * 129,
        "é",
    ],
)
def test_invalid_names_are_400(name: str) -> None:
    assert not is_model_name(name)
    with pytest.raises(BadRequest, match="invalid model name"):
        check_model_name(name)


def test_versions_are_decimal_integers() -> None:
    assert check_version("1") == "1"
    assert check_version("007") == "7"
    for bad in ("", "-1", "1.0", "v1", "1" * 19, "../1"):  # "v1" is an alias, not a version
        with pytest.raises(BadRequest, match="invalid model version"):
            check_version(bad)


def test_inside_refuses_links_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "m").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "m" / "link").symlink_to(outside)
    assert inside(root, "m") == (root / "m").resolve()
    with pytest.raises(ModelLoadError, match="leads outside the model repository"):
        inside(root, "m", "link")
    with pytest.raises(ModelLoadError):
        inside(root, "..", "secret")
