"""A model repository on the local filesystem: `ROOT/NAME/config.yaml` and `ROOT/NAME/VERSION/`.

The repository only finds and describes models; it loads nothing and keeps no state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from modelfleet.errors import ModelLoadError, model_not_found
from modelfleet.repository.config import CONFIG_FILENAME, ModelConfig, parse_config
from modelfleet.repository.names import inside, is_model_name
from modelfleet.repository.triton import CONFIG_PBTXT, TritonConfigError, read_triton_config
from modelfleet.repository.weights import WeightsManifest, blob_relpath, read_manifest

log = logging.getLogger(__name__)

# Default model file per backend, and the backend a file name implies.
DEFAULT_FILENAMES = {
    "onnxruntime": "model.onnx",
    "adapter": "weights.json",
    "python": "model.py",
    "ensemble": "",
    "torchscript": "model.pt",
}
INFERRED_BACKENDS = {"model.onnx": "onnxruntime"}  # file present -> backend, when config.yaml names none
_CONFIG_MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Everything needed to load one model, on local disk: config, version files and weight blobs."""

    name: str
    config: ModelConfig  # backend and filename filled in
    files: dict[int, Path]  # version -> its model file, resolved inside the repository
    weights: dict[int, WeightsManifest] = field(default_factory=dict)  # versions with a weights.json
    blobs: dict[str, Path] = field(
        default_factory=dict
    )  # sha256 hex -> local file, for every blob referenced

    @property
    def versions(self) -> list[int]:
        return sorted(self.files)

    def model_file(self, version: int) -> Path:
        return self.files[version]


class Repository(Protocol):
    """Where models come from: a folder here, object storage later."""

    def list_models(self) -> list[str]: ...

    def fetch(self, name: str) -> ModelSource:
        """Blocking. NotFound when absent, ModelLoadError when present but unusable."""
        ...

    def config(self, name: str) -> ModelConfig:
        """Blocking, cheap: only the model's config.yaml (defaults when it has none)."""
        ...

    def describe(self) -> str: ...


class FolderRepository:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"model repository {root} is not a folder")
        self.root = root.resolve()

    def describe(self) -> str:
        return str(self.root)

    def list_models(self) -> list[str]:
        names = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            if not is_model_name(entry.name):
                log.warning("skipping folder %r in the repository: not a valid model name", entry.name)
                continue
            names.append(entry.name)
        return names

    def fetch(self, name: str) -> ModelSource:
        if not is_model_name(name):
            raise model_not_found(name)
        folder = self.root / name
        if not folder.is_dir():
            raise model_not_found(name)
        folder = inside(self.root, name)
        config = self._read_config(folder, name)
        versions = {
            int(entry.name): inside(self.root, name, entry.name)
            for entry in folder.iterdir()
            if entry.name.isdigit() and entry.is_dir()
        }
        if not versions:
            raise ModelLoadError("no version folders (1/, 2/, ...) in the model folder")
        config = _with_backend(config, versions)
        assert config.filename is not None
        files = {v: inside(self.root, name, path.name, config.filename) for v, path in versions.items()}
        weights = {v: m for v, path in versions.items() if (m := read_manifest(path)) is not None}
        blobs = {}
        for digest in sorted({d for m in weights.values() for d in m.blobs}):
            blob = inside(self.root, blob_relpath(digest))
            if not blob.is_file():
                raise ModelLoadError(f"weight blob {digest[:12]}… is missing from the repository")
            blobs[digest] = blob
        return ModelSource(name, config, files, weights, blobs)

    def config(self, name: str) -> ModelConfig:
        if not is_model_name(name) or not (self.root / name).is_dir():
            raise model_not_found(name)
        return self._read_config(inside(self.root, name), name)

    def _read_config(self, folder: Path, name: str) -> ModelConfig:
        """config.yaml; else Triton's config.pbtxt (a Triton repository served as it is); else
        the defaults."""
        if (folder / CONFIG_FILENAME).exists():
            return parse_config(self._read_text(name, CONFIG_FILENAME), name)
        if (folder / CONFIG_PBTXT).exists():
            try:
                triton = read_triton_config(self._read_text(name, CONFIG_PBTXT), name)
            except TritonConfigError as exc:
                raise ModelLoadError(f"{CONFIG_PBTXT}: {exc}") from None
            if triton.ignored:
                log.info(
                    "model %r: %s fields with no counterpart here: %s", name, CONFIG_PBTXT, triton.ignored
                )
            return triton.config
        return ModelConfig()

    def _read_text(self, name: str, filename: str) -> str:
        path = inside(self.root, name, filename)
        if path.stat().st_size > _CONFIG_MAX_BYTES:
            raise ModelLoadError(f"{filename} is larger than {_CONFIG_MAX_BYTES} bytes")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ModelLoadError(f"{filename} is not UTF-8 text") from None


def _with_backend(config: ModelConfig, versions: dict[int, Path]) -> ModelConfig:
    """Fill backend and filename: from the config, else from the files present."""
    backend: str | None = config.backend
    if backend is None:
        present = {p.name for folder in versions.values() for p in folder.iterdir()}
        found = [b for filename, b in INFERRED_BACKENDS.items() if filename in present]
        if not found:
            expected = ", ".join(INFERRED_BACKENDS)
            raise ModelLoadError(
                f"no backend given in {CONFIG_FILENAME} and no known model file ({expected})"
            )
        backend = found[0]
    filename = config.filename or DEFAULT_FILENAMES[backend]
    return config.model_copy(update={"backend": backend, "filename": filename})
