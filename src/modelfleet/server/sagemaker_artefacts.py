"""SageMaker multi-model artefacts: what `POST /models {"model_name", "url"}` loads, staged as a model folder.

SageMaker mounts each model of a multi-model endpoint under its model root (`/opt/ml/models/<id>/model`,
the extracted model.tar.gz) and asks the container to load it under an opaque name. The artefact — a
model folder in our layout, a bare `model.onnx` or TorchScript `.pt`, or a tar archive of either — is
checked to lie inside the model root (links followed), then staged into the repository folder as
`NAME/` (files hard-linked where the filesystem allows, else copied), so the model manager and its
worker processes load it like any repository model. A staged folder carries a marker file naming its
url; only such folders are replaced or removed here, never a repository's own models.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from modelfleet.errors import BadRequest, Conflict

MARKER = ".sagemaker-url"  # in a staged model folder: the url it came from (a dot file: never a version)
ARCHIVES = (".tar.gz", ".tgz", ".tar")
BARE_FILES = {".onnx": ("model.onnx", None), ".pt": ("model.pt", "torchscript")}  # suffix -> name, backend
LAYOUT_FILES = ("config.yaml", "config.pbtxt")


def shown(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit and text.isprintable() else repr(text[:limit])


def resolve_inside(root: Path, url: str, or_root: bool = False) -> Path | None:
    """`url` (absolute, or relative to root) resolved with its links followed, when it lies inside
    `root` (or is root, with `or_root`); None otherwise (also for NUL bytes, backslashes and
    `scheme://` urls). Blocking."""
    if "\x00" in url or "\\" in url or "://" in url:
        return None
    real = root.resolve()
    path = (real / url).resolve()
    return path if real in path.parents or (or_root and path == real) else None


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVES)


class Stager:
    """Stages artefacts from `root` (the model root) into `repository` (a folder) under their model
    names, and removes them."""

    def __init__(self, root: Path, repository: Path) -> None:
        self.root = root.resolve()
        self.repository = repository

    def stage(self, name: str, url: str, source: Path) -> None:
        """Blocking. `source` is the resolved artefact inside the model root. 400 when it is no model
        or an unsafe archive, 409 when `name` is a model of the repository itself; nothing is left
        behind on failure (the work happens in a hidden folder renamed into place at the end)."""
        target = self.repository / name
        if target.exists() or target.is_symlink():
            if not (target / MARKER).is_file():
                raise Conflict(
                    f"model_name '{name}' is a model of the repository itself; load it without a "
                    "url, or choose another name"
                )
            shutil.rmtree(target)  # an earlier staging of this name, unloaded since
        work = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=self.repository))
        try:
            if not source.exists():
                raise BadRequest(f"nothing at url '{shown(url)}'")
            confine = self.root  # every file read, links followed, lies below this
            if source.is_file() and is_archive(source):
                confine = extract_safely(source, work / "archive", url).resolve()
                source = _top_folder(confine)
            folder = work / "model"
            _lay_out(source, folder, url, confine)
            (folder / MARKER).write_text(url, encoding="utf-8")
            try:
                folder.rename(target)
            except OSError:
                raise Conflict(f"model '{name}' appeared in the repository while it was staged") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def remove(self, name: str) -> None:
        """Blocking: the staged folder of `name`, if it is one (a repository model stays)."""
        target = self.repository / name
        if (target / MARKER).is_file() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)


def _lay_out(source: Path, folder: Path, url: str, confine: Path) -> None:
    """`folder` as a model folder of our layout, from a model folder, a bare model file, or a folder
    holding exactly one bare model file."""
    if source.is_file():
        _bare(source, folder, url, confine)
        return
    if not source.is_dir():
        raise BadRequest(f"url '{shown(url)}' is neither a file nor a folder")
    entries = list(source.iterdir())
    if any(e.name in LAYOUT_FILES or (e.name.isdigit() and e.is_dir()) for e in entries):
        _check_links(source, url, confine)
        shutil.copytree(source, folder, copy_function=_link_or_copy)
        return
    models = [e for e in entries if e.suffix.lower() in BARE_FILES and e.is_file()]
    if len(models) != 1:
        found = "no model file" if not models else f"{len(models)} model files"
        raise BadRequest(
            f"url '{shown(url)}' holds {found}: give a model folder (config.yaml, 1/, ...), a "
            "model.onnx or TorchScript .pt file, or a tar archive of either"
        )
    _bare(models[0], folder, url, confine)


def _bare(file: Path, folder: Path, url: str, confine: Path) -> None:
    kind = BARE_FILES.get(file.suffix.lower())
    if kind is None:
        raise BadRequest(
            f"url '{shown(url)}' is a file of unknown kind: give a .onnx or TorchScript .pt file, "
            "a model folder, or a tar archive (.tar.gz, .tgz, .tar)"
        )
    if confine not in file.resolve().parents:
        raise BadRequest(f"url '{shown(url)}': '{shown(file.name)}' links outside the model root")
    filename, backend = kind
    (folder / "1").mkdir(parents=True)
    _link_or_copy(str(file), str(folder / "1" / filename))
    if backend is not None:
        (folder / "config.yaml").write_text(f"backend: {backend}\n", encoding="utf-8")


def _check_links(source: Path, url: str, confine: Path) -> None:
    """400 for a folder link inside the model folder, or a file link leading out of `confine`
    (the files are copied through their links)."""
    for top, dirs, files in os.walk(source):
        for entry in dirs + files:
            path = Path(top, entry)
            if not path.is_symlink():
                continue
            where = shown(str(path.relative_to(source)))
            if path.is_dir():
                raise BadRequest(
                    f"url '{shown(url)}': '{where}' is a link to a folder; copy the folder instead"
                )
            if confine not in path.resolve().parents:
                raise BadRequest(f"url '{shown(url)}': '{where}' links outside the model root")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same filesystem: no bytes copied
    except OSError:
        shutil.copy2(src, dst)


def extract_safely(archive: Path, into: Path, url: str) -> Path:
    """Every entry checked before anything is written: regular files, folders and links that stay
    inside the archive only (no absolute paths, no `..`, no devices). 400 naming the entry."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                problem = unsafe(member)
                if problem is not None:
                    raise BadRequest(f"archive '{shown(url)}': entry '{shown(member.name)}' {problem}")
            into.mkdir(parents=True)
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadRequest(f"archive '{shown(url)}' cannot be read: {exc}") from None
    return into


def unsafe(member: tarfile.TarInfo) -> str | None:
    """Why an archive entry must not be extracted, or None."""
    path = PurePosixPath(member.name)
    if path.is_absolute():
        return "has an absolute path"
    if ".." in path.parts:
        return "leaves the archive ('..')"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "is not a file, folder or link"
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = path.parent if member.issym() else PurePosixPath()
        if link.is_absolute() or not _stays_inside(base / link):
            return f"links outside the archive ('{shown(member.linkname)}')"
    return None


def _stays_inside(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def _top_folder(folder: Path) -> Path:
    """An archive of one folder (`model/config.yaml`, ...) is that folder's model."""
    entries = list(folder.iterdir())
    if (
        len(entries) == 1
        and entries[0].is_dir()
        and not entries[0].is_symlink()
        and not entries[0].name.isdigit()
    ):
        return entries[0]
    return folder
