"""`build_demo_repo`: the demo model repository. A new repository, and each model added to an existing
one, is built in a hidden sibling folder and renamed into place: complete or absent, never half-built.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from modelfleet.demo.onnx_files import IDENTITY_WIDTH, MODEL_FILENAME, WEIGHTS_FILENAME, identity_model
from modelfleet.demo.tenants import MAX_TENANTS, TenantWriter, tenant_name
from modelfleet.repository.config import CONFIG_FILENAME, ModelConfig, TensorConfig

IDENTITY = "identity"
SENTIMENT = "minilm-sentiment"
VERSION = "1"

IDENTITY_CONFIG = ModelConfig(
    backend="onnxruntime",
    max_batch_size=1024,
    inputs=[TensorConfig(name="input", datatype="FP32", shape=[-1, IDENTITY_WIDTH])],
    outputs=[TensorConfig(name="output", datatype="FP32", shape=[-1, IDENTITY_WIDTH])],
)
SENTIMENT_CONFIG = ModelConfig(
    backend="onnxruntime",
    max_batch_size=64,
    inputs=[
        TensorConfig(name="input_ids", datatype="INT64", shape=[-1, -1]),
        TensorConfig(name="attention_mask", datatype="INT64", shape=[-1, -1]),
    ],
    outputs=[TensorConfig(name="logits", datatype="FP32", shape=[-1, 2])],
)
"""minilm-sentiment and every tenant: logits[1] > logits[0] means positive."""

_IDENTITY_FILES = (MODEL_FILENAME,)
_SENTIMENT_FILES = (MODEL_FILENAME, WEIGHTS_FILENAME)


def build_demo_repo(
    path: Path, tenants: int = 0, force: bool = False, log: Callable[[str], None] = print
) -> None:
    """Build the demo repository at `path`: identity, minilm-sentiment and tenant-00001 ... tenant-NNNNN.

    A missing `path` is built whole beside it and renamed into place, so that its existence means
    a complete repository (the Makefile relies on it). In an existing one, models already there are
    kept unless `force`, and each model is built beside its folder and renamed into place.
    FileExistsError when a folder in the way is not a complete demo model; NotADirectoryError when
    `path` is a file. Needs torch and transformers only when minilm-sentiment has to be built.
    """
    if not 0 <= tenants <= MAX_TENANTS:
        raise ValueError(f"tenants must be between 0 and {MAX_TENANTS}, got {tenants}")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    start = time.monotonic()
    if path.is_dir():
        _build_models(path, tenants, force, log)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _staged(path) as staging:
            _build_models(staging, tenants, force, log)
    log(f"demo repository ready at {path} ({time.monotonic() - start:.1f} s)")


def _build_models(path: Path, tenants: int, force: bool, log: Callable[[str], None]) -> None:
    if _needs_build(path / IDENTITY, _IDENTITY_FILES, force):
        _build_identity(path / IDENTITY)
        log(f"{IDENTITY}: written")
    else:
        log(f"{IDENTITY}: present, kept")
    if _needs_build(path / SENTIMENT, _SENTIMENT_FILES, force):
        _build_sentiment(path / SENTIMENT, log)
    else:
        log(f"{SENTIMENT}: present, kept")
    if tenants:
        _build_tenants(path, tenants, force, log)


def _build_identity(folder: Path) -> None:
    with _staged(folder) as staging:
        _write_config(staging, IDENTITY_CONFIG)
        (staging / VERSION).mkdir()
        (staging / VERSION / MODEL_FILENAME).write_bytes(identity_model().SerializeToString())


def _build_sentiment(folder: Path, log: Callable[[str], None]) -> None:
    log(f"{SENTIMENT}: exporting all-MiniLM-L6-v2 with PyTorch (takes a few seconds)")
    from modelfleet.demo.minilm import export_minilm  # torch: imported only when this model is built

    with _staged(folder) as staging:
        (staging / VERSION).mkdir()
        export_minilm(staging / VERSION, log)
        _write_config(staging, SENTIMENT_CONFIG)


def _build_tenants(path: Path, count: int, force: bool, log: Callable[[str], None]) -> None:
    todo = [i for i in range(1, count + 1) if _needs_build(path / tenant_name(i), _SENTIMENT_FILES, force)]
    if len(todo) < count:
        log(f"tenants: {count - len(todo)} present, kept")
    if not todo:
        return
    start = time.monotonic()
    writer = TenantWriter(path / SENTIMENT / VERSION)
    step = -(-len(todo) // 10)  # report about ten times
    for done, index in enumerate(todo, 1):
        with _staged(path / tenant_name(index)) as staging:
            (staging / VERSION).mkdir()
            writer.write(staging / VERSION, index)
            _write_config(staging, SENTIMENT_CONFIG)
        if done % step == 0 or done == len(todo):
            log(f"tenants: {done}/{len(todo)} written ({time.monotonic() - start:.1f} s)")
    if writer.copied:
        log(f"tenants: hard links failed here, so tenants hold copies of {WEIGHTS_FILENAME}")


def _needs_build(folder: Path, files: tuple[str, ...], force: bool) -> bool:
    """True when the model is absent, or present and to be replaced; FileExistsError for anything else."""
    if not folder.exists() and not folder.is_symlink():
        return True
    if force:
        return True
    complete = (folder / CONFIG_FILENAME).is_file() and all((folder / VERSION / f).is_file() for f in files)
    if complete:
        return False
    wanted = ", ".join([CONFIG_FILENAME, *(f"{VERSION}/{f}" for f in files)])
    raise FileExistsError(
        f"{folder} is in the way: it is not a complete demo model ({wanted}); remove it or pass --force"
    )


@contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A new folder beside `final` to build in, which replaces `final` when the block ends without error.

    Its name starts with a dot, so the folder repository skips it should a server be watching.
    """
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir()
    try:
        yield staging
        _replace(final, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(final: Path, new: Path) -> None:
    if not final.exists() and not final.is_symlink():
        new.rename(final)
        return
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
    final.rename(old)
    new.rename(final)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def _write_config(folder: Path, config: ModelConfig) -> None:
    fields = config.model_dump(mode="json", exclude_defaults=True)
    text = "# Written by `modelfleet demo-repo`.\n" + yaml.safe_dump(
        fields, sort_keys=False, default_flow_style=None
    )
    (folder / CONFIG_FILENAME).write_text(text, encoding="utf-8")
