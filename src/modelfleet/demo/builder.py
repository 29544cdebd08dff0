"""`build_demo_repo`: the demo model repository. A new repository, and each model added to an existing
one, is built in a hidden sibling folder and renamed into place: complete or absent, never half-built.
Weight blobs go straight into the repository's blob store: a blob is complete once it has its name.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import yaml

from modelfleet.demo import text
from modelfleet.demo.onnx_files import IDENTITY_WIDTH, MODEL_FILENAME, WEIGHTS_FILENAME, identity_model
from modelfleet.demo.shared_weights import SHARED_FILES
from modelfleet.demo.tenants import MAX_TENANTS, AdapterWriter, FullCopyWriter, tenant_name
from modelfleet.repository.config import (
    CONFIG_FILENAME,
    HeadConfig,
    ModelConfig,
    OnnxRuntimeOptions,
    TensorConfig,
)
from modelfleet.repository.weights import MANIFEST

IDENTITY = "identity"
SENTIMENT = "minilm-sentiment"
BASE = "minilm-base"
VERSION = "1"
EMBEDDING_WIDTH = 384  # all-MiniLM-L6-v2's hidden size

_TOKENS = [
    TensorConfig(name="input_ids", datatype="INT64", shape=[-1, -1]),
    TensorConfig(name="attention_mask", datatype="INT64", shape=[-1, -1]),
]
IDENTITY_CONFIG = ModelConfig(
    backend="onnxruntime",
    pinned=True,
    max_batch_size=1024,
    inputs=[TensorConfig(name="input", datatype="FP32", shape=[-1, IDENTITY_WIDTH])],
    outputs=[TensorConfig(name="output", datatype="FP32", shape=[-1, IDENTITY_WIDTH])],
)
FULL_COPY_CONFIG = ModelConfig(
    backend="onnxruntime",
    max_batch_size=64,
    inputs=_TOKENS,
    outputs=[TensorConfig(name="logits", datatype="FP32", shape=[-1, 2])],
)
"""Full-copy tenants. They and every other sentiment model: logits[1] > logits[0] means positive."""
SENTIMENT_CONFIG = FULL_COPY_CONFIG.model_copy(update={"pinned": True})
BASE_CONFIG = ModelConfig(
    backend="onnxruntime",
    max_batch_size=64,
    inputs=_TOKENS,
    outputs=[TensorConfig(name="embedding", datatype="FP32", shape=[-1, EMBEDDING_WIDTH])],
    # One session uses these weights: a private, re-laid-out copy of them makes inference faster.
    onnxruntime=OnnxRuntimeOptions(prepacking=True),
)
ADAPTER_CONFIG = ModelConfig(
    backend="adapter", base=BASE, head=HeadConfig(input="embedding", output="logits")
)
"""Adapter tenants: inputs, outputs and max_batch_size are the server's to complete from the base."""

_IDENTITY_FILES = (MODEL_FILENAME,)
_SENTIMENT_FILES = (MODEL_FILENAME, WEIGHTS_FILENAME)
_TENANT_FILES = (SHARED_FILES, (MANIFEST,))  # a full copy, or an adapter
_Log = Callable[[str], None]


def build_demo_repo(
    path: Path, tenants: int = 0, force: bool = False, log: _Log = print, full_copies: bool = False
) -> None:
    """Build the demo repository at `path`: identity, minilm-sentiment, minilm-base and tenant-00001 ...
    tenant-NNNNN, adapters over minilm-base or, with `full_copies`, fine-tuned copies of minilm-sentiment.

    A missing `path` is built whole beside it and renamed into place, so that its existence means
    a complete repository (the Makefile relies on it). In an existing one, models already there are
    kept unless `force`, each model is built beside its folder and renamed into place, and new weight
    blobs join the blob store already there. FileExistsError when a folder in the way is not a complete
    demo model; NotADirectoryError when `path` is a file. Needs torch and transformers only when
    minilm-sentiment or minilm-base has to be built.
    """
    if not 0 <= tenants <= MAX_TENANTS:
        raise ValueError(f"tenants must be between 0 and {MAX_TENANTS}, got {tenants}")
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    start = time.monotonic()
    if path.is_dir():
        _build_models(path, tenants, full_copies, force, log)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _staged(path) as staging:
            _build_models(staging, tenants, full_copies, force, log)
    log(f"demo repository ready at {path} ({time.monotonic() - start:.1f} s)")


def _build_models(path: Path, tenants: int, full_copies: bool, force: bool, log: _Log) -> None:
    if _needs_build(path / IDENTITY, [_IDENTITY_FILES], force):
        _write_model(path / IDENTITY, IDENTITY_CONFIG, _write_identity)
        log(f"{IDENTITY}: written")
    else:
        log(f"{IDENTITY}: present, kept")
    _build_minilm(path, force, log)
    _build_text(path, force, log)
    if tenants:
        _build_tenants(path, tenants, full_copies, force, log)


def _write_identity(version_folder: Path) -> None:
    (version_folder / MODEL_FILENAME).write_bytes(identity_model().SerializeToString())


def _build_minilm(path: Path, force: bool, log: _Log) -> None:
    """minilm-sentiment and minilm-base, from one PyTorch export when either has to be built."""
    wanted = {SENTIMENT: _SENTIMENT_FILES, BASE: SHARED_FILES}
    todo = [name for name, files in wanted.items() if _needs_build(path / name, [files], force)]
    for name in wanted:
        if name not in todo:
            log(f"{name}: present, kept")
    if not todo:
        return
    log(f"{', '.join(todo)}: exporting all-MiniLM-L6-v2 with PyTorch (takes a few seconds)")
    from modelfleet.demo.minilm import MiniLMExport  # torch: imported only when these models are built

    export = MiniLMExport(log)
    if SENTIMENT in todo:
        _write_model(path / SENTIMENT, SENTIMENT_CONFIG, export.write_sentiment)
    if BASE in todo:
        _write_model(path / BASE, BASE_CONFIG, partial(export.write_base, repo_root=path))


def _build_text(path: Path, force: bool, log: _Log) -> None:
    """minilm-sentiment-text: an ensemble of two python models around minilm-sentiment."""
    models = (
        (text.TOKENIZE, text.TOKENIZE_CONFIG, text.write_tokenize, ("model.py", "tokenizer.json")),
        (text.LABEL, text.LABEL_CONFIG, text.write_label, ("model.py",)),
        (text.TEXT, text.TEXT_CONFIG, text.write_text, ()),
    )
    for name, config, write, files in models:
        if _needs_build(path / name, [files], force):
            _write_model(path / name, config, write)
            log(f"{name}: written")
        else:
            log(f"{name}: present, kept")


def _build_tenants(path: Path, count: int, full_copies: bool, force: bool, log: _Log) -> None:
    todo = [i for i in range(1, count + 1) if _needs_build(path / tenant_name(i), _TENANT_FILES, force)]
    if len(todo) < count:
        log(f"tenants: {count - len(todo)} present, kept{_other_kind(path, count, set(todo), full_copies)}")
    if not todo:
        return
    start = time.monotonic()
    writer: AdapterWriter | FullCopyWriter
    if full_copies:
        writer = FullCopyWriter(path / SENTIMENT / VERSION, path / BASE / VERSION)
        config = _config_text(FULL_COPY_CONFIG)
    else:
        writer = AdapterWriter(path / SENTIMENT / VERSION, path)
        config = _config_text(ADAPTER_CONFIG)
    step = -(-len(todo) // 10)  # report about ten times
    for done, index in enumerate(todo, 1):
        _write_model(path / tenant_name(index), config, partial(writer.write, index=index))
        if done % step == 0 or done == len(todo):
            log(f"tenants: {done}/{len(todo)} written ({time.monotonic() - start:.1f} s)")


def _other_kind(path: Path, count: int, todo: set[int], full_copies: bool) -> str:
    """A note on kept tenants of the kind not asked for ("" when there are none)."""
    other = sum(
        (path / tenant_name(i) / VERSION / MODEL_FILENAME).is_file() != full_copies
        for i in range(1, count + 1)
        if i not in todo
    )
    if not other:
        return ""
    kind = "adapters" if full_copies else "full copies"
    return f" ({other} of them {kind}; --force rebuilds them)"


def _write_model(folder: Path, config: ModelConfig | str, write_version: Callable[[Path], object]) -> None:
    """folder/config.yaml and folder/1/ filled by `write_version`, built beside `folder` and renamed."""
    with _staged(folder) as staging:
        (staging / VERSION).mkdir()
        write_version(staging / VERSION)
        text = config if isinstance(config, str) else _config_text(config)
        (staging / CONFIG_FILENAME).write_text(text, encoding="utf-8")


def _needs_build(folder: Path, layouts: Sequence[tuple[str, ...]], force: bool) -> bool:
    """True when the model is absent, or present and to be replaced; FileExistsError for anything but
    a complete model: config.yaml and, in its version folder, the files of one of the `layouts`."""
    if not folder.exists() and not folder.is_symlink():
        return True
    if force:
        return True
    if (folder / CONFIG_FILENAME).is_file() and any(
        all((folder / VERSION / f).is_file() for f in files) for files in layouts
    ):
        return False
    wanted = " or ".join(
        ", ".join([CONFIG_FILENAME, *(f"{VERSION}/{f}" for f in files)]) for files in layouts
    )
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


def _config_text(config: ModelConfig) -> str:
    fields = config.model_dump(mode="json", exclude_unset=True)  # what the demo chose, not every default
    return "# Written by `modelfleet demo-repo`.\n" + yaml.safe_dump(
        fields, sort_keys=False, default_flow_style=None
    )
