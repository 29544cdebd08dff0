"""Writing into a model repository without ever leaving half a model there.

A model folder (or a new version of an existing one) is built in a hidden sibling folder
(`.NAME.xxxxxxxx.partial`: the folder repository skips dot names) and renamed into place at the
end; on any error the staging folder is removed and the repository is as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from modelfleet.compile.errors import CompileError
from modelfleet.repository.config import CONFIG_FILENAME, ModelConfig
from modelfleet.repository.names import is_model_name


@dataclass(frozen=True)
class Staged:
    folder: Path  # the staging model folder: write config.yaml via write_config, files into version_dir
    version: int

    @property
    def version_dir(self) -> Path:
        return self.folder / str(self.version)


def split_out(out: Path) -> tuple[Path, str]:
    """REPO/NAME -> (REPO, NAME), the name checked."""
    name = out.name
    if not is_model_name(name):
        raise CompileError(
            f"'{name}' is not a model name: letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return out.parent, name


def next_version(model_folder: Path) -> int:
    existing = (
        [int(p.name) for p in model_folder.iterdir() if p.name.isdigit()] if model_folder.is_dir() else []
    )
    return max(existing, default=0) + 1


@contextmanager
def staged_model(repo: Path, name: str, version: int | None = None) -> Iterator[Staged]:
    """A staging folder for REPO/NAME/VERSION (and its config.yaml), moved in when the block ends.

    A new model is renamed into place whole; for an existing one the version folder is renamed in
    and config.yaml replaced (each one atomic rename). CompileError when the version exists."""
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / name
    if final.exists() and not final.is_dir():
        raise CompileError(f"{final} exists and is not a model folder")
    chosen = next_version(final) if version is None else version
    if (final / str(chosen)).exists():
        raise CompileError(f"{final}/{chosen} exists already; choose another --version")
    staging = repo / f".{name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        (staging / str(chosen)).mkdir()
        yield Staged(staging, chosen)
        if not final.exists():
            staging.rename(final)
            return
        (staging / str(chosen)).rename(final / str(chosen))
        config = staging / CONFIG_FILENAME
        if config.exists():
            os.replace(config, final / CONFIG_FILENAME)
        shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def config_text(config: ModelConfig, header: str) -> str:
    fields = config.model_dump(mode="json", exclude_unset=True)
    return f"# {header}\n" + yaml.safe_dump(fields, sort_keys=False, default_flow_style=None)


def write_atomic(path: Path, text: str) -> None:
    """Write a file beside its final name and rename it there."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a report or config is for everyone who reads the repo
    os.replace(tmp, path)
