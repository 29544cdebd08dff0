"""`modelfleet demo-repo --tenants 3`, built once through the CLI (real MiniLM export, real ONNX Runtime),
and a copy of it given two full-copy tenants; served through the real model manager.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import external_data_helper
from typer.testing import CliRunner

from modelfleet.cli import build_app
from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.demo import example_request
from modelfleet.demo.onnx_files import HEAD_INITIALIZERS, load_without_weights, read_initializers
from modelfleet.demo.shared_weights import BlobSession
from modelfleet.demo.tenants import bitfit_names
from modelfleet.engine.lifecycle import ModelManager
from modelfleet.protocol.v2 import InferInput, InferRequest
from modelfleet.repository.config import CONFIG_FILENAME, parse_config
from modelfleet.repository.folder import FolderRepository
from modelfleet.repository.weights import SHARED_PLACEHOLDER, blob_relpath, open_blob, read_manifest

pytestmark = pytest.mark.slow

TENANTS = ["tenant-00001", "tenant-00002", "tenant-00003"]
MODELS = [
    "identity",
    "minilm-base",
    "minilm-label",
    "minilm-sentiment",
    "minilm-sentiment-text",
    "minilm-tokenize",
    *TENANTS,
]
POSITIVE = "What a wonderful day, I absolutely love this and I am so happy!"
NEGATIVE = "This is awful, it broke at once and I hate it. Never again."
TEXTS = [POSITIVE, "Fine.", NEGATIVE, "The delivery was late and the box was damaged."]  # padded batch
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Built:
    path: Path
    output: str


def demo_repo(*args: str) -> str:
    result = CliRunner().invoke(build_app(), ["demo-repo", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Built:
    pytest.importorskip("torch", reason="needs the demo extra")
    path = tmp_path_factory.mktemp("demo") / "repo"
    return Built(path, demo_repo(str(path), "--tenants", "3"))


@pytest.fixture(scope="session")
def full_copies(demo: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The MiniLM models and blob store of `demo` (hard links), plus two full-copy tenants: no export."""
    path = tmp_path_factory.mktemp("full") / "repo"
    path.mkdir()
    for name in ("identity", "minilm-base", "minilm-sentiment", ".blobs"):
        shutil.copytree(demo.path / name, path / name, copy_function=os.link)
    return Built(path, demo_repo(str(path), "--tenants", "2", "--full-copies"))


@pytest.fixture
async def manager(demo: Built) -> AsyncIterator[ModelManager]:
    async with served(demo.path) as m:
        yield m


class served:
    """`async with served(path) as manager`: the server's model manager over a repository."""

    def __init__(self, path: Path) -> None:
        settings = ServerSettings(repository=path, startup_load=StartupLoad.NONE, python_models=True)
        self.manager = ModelManager(FolderRepository(path), settings)

    async def __aenter__(self) -> ModelManager:
        await self.manager.start()
        return self.manager

    async def __aexit__(self, *exc: object) -> None:
        await self.manager.close()


def tokens(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask for a batch, padded with 0 to the longest text."""
    rows = [{t["name"]: t["data"] for t in example_request(text)["inputs"]} for text in texts]
    width = max(len(r["input_ids"]) for r in rows)
    return {
        name: np.array([r[name] + [0] * (width - len(r[name])) for r in rows], np.int64)
        for name in ("input_ids", "attention_mask")
    }


def session(path: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(path / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


async def served_logits(manager: ModelManager, name: str, texts: Sequence[str]) -> np.ndarray:
    model = await manager.acquire(name)
    request = InferRequest([InferInput(n, "INT64", v.shape, v) for n, v in tokens(texts).items()])
    out: np.ndarray = (await model.infer(request, 0)).outputs[0].data
    assert out.shape == (len(texts), 2)
    return out


def sentiment_head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    head = read_initializers(
        load_without_weights(path / "minilm-sentiment" / "1" / "model.onnx"), HEAD_INITIALIZERS
    )
    return head["head.weight"], head["head.bias"]


# --- the repository


def test_every_model_is_accepted_by_the_repository(demo: Built) -> None:
    repo = FolderRepository(demo.path)
    assert repo.list_models() == MODELS
    configs = {name: repo.fetch(name).config for name in MODELS}  # valid configs, blobs present
    assert configs["identity"].pinned and configs["minilm-sentiment"].pinned
    assert not configs["minilm-base"].pinned
    assert configs["minilm-base"].onnxruntime.prepacking is True
    for name in TENANTS:
        config = parse_config((demo.path / name / CONFIG_FILENAME).read_text(), name)
        assert (config.backend, config.base) == ("adapter", "minilm-base")
        assert config.head is not None and (config.head.input, config.head.output) == ("embedding", "logits")


def test_minilm_base_takes_every_weight_from_the_blob_store(demo: Built) -> None:
    folder = demo.path / "minilm-base" / "1"
    model = load_without_weights(folder / "model.onnx")
    manifest = read_manifest(folder)
    assert manifest is not None
    assert set(manifest.tensors) == {t.name for t in model.graph.initializer}
    assert all(external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    assert (folder / SHARED_PLACEHOLDER).stat().st_size == 0
    assert (folder / "model.onnx").stat().st_size < 1_000_000
    assert sum(ref.nbytes for ref in manifest.tensors.values()) > 80_000_000


def test_the_exports_report_their_check_against_torch(demo: Built) -> None:
    found = re.findall(r"(minilm-\w+): written.* max \|ORT - torch\| = (\S+)", demo.output)
    assert [name for name, _ in found] == ["minilm-sentiment", "minilm-base"]
    assert all(float(diff) <= TOLERANCE for _, diff in found)


def test_identity_returns_its_input(demo: Built) -> None:
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(3, 16)
    assert np.array_equal(session(demo.path, "identity").run(["output"], {"input": x})[0], x)


def test_sentiment_tells_positive_from_negative(demo: Built) -> None:
    logits = session(demo.path, "minilm-sentiment").run(["logits"], tokens([POSITIVE, NEGATIVE]))[0]
    assert logits[0, 1] > logits[0, 0]
    assert logits[1, 0] > logits[1, 1]


def test_the_sentiment_head_over_the_base_is_the_sentiment_model(demo: Built) -> None:
    feeds = tokens(TEXTS)
    embedding = BlobSession(demo.path / "minilm-base" / "1", demo.path).run(["embedding"], feeds)[0]
    weight, bias = sentiment_head(demo.path)
    full = session(demo.path, "minilm-sentiment").run(["logits"], feeds)[0]
    np.testing.assert_allclose(embedding @ weight.T + bias, full, rtol=0, atol=TOLERANCE)


def test_example_request_is_a_v2_body(demo: Built) -> None:
    body: dict[str, Any] = example_request("Hello world")
    ids, mask = body["inputs"]
    assert [ids["name"], mask["name"]] == ["input_ids", "attention_mask"]
    assert ids["datatype"] == mask["datatype"] == "INT64"
    assert ids["shape"] == mask["shape"] == [1, len(ids["data"])]
    assert ids["data"][0] == 101  # [CLS]
    assert mask["data"] == [1] * len(ids["data"])


# --- adapter tenants, served


async def test_adapter_tenants_are_their_head_over_the_base(demo: Built, manager: ModelManager) -> None:
    embedding = BlobSession(demo.path / "minilm-base" / "1", demo.path).run(["embedding"], tokens(TEXTS))[0]
    for name in TENANTS:
        manifest = read_manifest(demo.path / name / "1")
        assert manifest is not None
        weight, bias = (
            open_blob(demo.path / blob_relpath(ref.blob), ref)
            for ref in (manifest.tensors["weight"], manifest.tensors["bias"])
        )
        logits = await served_logits(manager, name, TEXTS)
        np.testing.assert_allclose(logits, embedding @ weight.T + bias, rtol=0, atol=TOLERANCE)


async def test_adapter_tenants_tell_sentiment_and_answer_differently(manager: ModelManager) -> None:
    answers = [
        await served_logits(manager, name, [POSITIVE, NEGATIVE]) for name in ["minilm-sentiment", *TENANTS]
    ]
    for logits in answers:
        assert logits[0, 1] > logits[0, 0]
        assert logits[1, 0] > logits[1, 1]
    for i, a in enumerate(answers):
        for b in answers[i + 1 :]:
            assert np.abs(a - b).max() > 1e-3


# --- full-copy tenants


def test_full_copies_add_no_blob_and_keep_their_tuned_tensors_inline(demo: Built, full_copies: Built) -> None:
    assert "exporting" not in full_copies.output
    assert "minilm-base: present, kept" in full_copies.output
    assert sorted(p.name for p in (full_copies.path / ".blobs").rglob("*")) == sorted(
        p.name for p in (demo.path / ".blobs").rglob("*")
    )
    base = read_manifest(full_copies.path / "minilm-base" / "1")
    assert base is not None
    for name in TENANTS[:2]:
        folder = full_copies.path / name / "1"
        model = load_without_weights(folder / "model.onnx")
        tuned = {*bitfit_names(t.name for t in model.graph.initializer), *HEAD_INITIALIZERS}
        assert len(tuned) == 12  # the last layer's 6 biases and 2 LayerNorms (weight, bias), the head's 2
        inline = {t.name for t in model.graph.initializer if not external_data_helper.uses_external_data(t)}
        assert inline == tuned
        manifest = read_manifest(folder)
        assert manifest is not None
        assert manifest.tensors == {n: ref for n, ref in base.tensors.items() if n not in tuned}


async def test_full_copies_tell_sentiment_and_answer_differently(full_copies: Built) -> None:
    async with served(full_copies.path) as manager:
        answers = [await served_logits(manager, name, [POSITIVE, NEGATIVE]) for name in TENANTS[:2]]
        reference = await served_logits(manager, "minilm-sentiment", [POSITIVE, NEGATIVE])
    for logits in answers:
        assert logits[0, 1] > logits[0, 0]
        assert logits[1, 0] > logits[1, 1]
        assert np.abs(logits - reference).max() > 1e-3
    assert np.abs(answers[0] - answers[1]).max() > 1e-3


def test_a_second_build_without_force_changes_nothing(demo: Built) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo.path.rglob("*")}
    output = demo_repo(str(demo.path), "--tenants", "3")
    assert "exporting" not in output
    assert "minilm-base: present, kept" in output
    assert "tenants: 3 present, kept" in output
    assert {p: p.stat().st_mtime_ns for p in demo.path.rglob("*")} == before


async def test_the_text_pipeline_labels_sentences(manager: ModelManager) -> None:
    model = await manager.acquire("minilm-sentiment-text")
    texts = np.array([[b"What a wonderful, delightful day"], [b"This is terrible, I hate it"]], dtype=object)
    response = await model.infer(InferRequest([InferInput("text", "BYTES", texts.shape, texts)]), 0)
    outputs = {o.name: o.data for o in response.outputs}
    assert outputs["label"].tolist() == [[b"positive"], [b"negative"]]
    assert all(0.5 < p < 1.0 for p in outputs["probability"].ravel())
