"""The machine a profile is measured on, and a digest that tells one model version's files from another's."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from modelfleet import __version__
from modelfleet.host import cpu_model
from modelfleet.tune.schema import CHART_FILENAME, PROFILE_FILENAME, Machine

_OWN_FILES = {PROFILE_FILENAME, CHART_FILENAME}
_CHUNK = 1 << 20


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def this_machine() -> Machine:
    return Machine(
        nproc=nproc(),
        cpu_model=cpu_model(),
        memory_bytes=_memory_bytes(),
        platform=f"{platform.system()} {platform.machine()}",
        python=sys.version.split()[0],
        modelfleet=__version__,
        onnxruntime=_version("onnxruntime"),
    )


def version_digest(folder: Path) -> str:
    """sha256 over the folder's files, names and contents, leaving out the profile's own files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in _OWN_FILES:
            continue
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
