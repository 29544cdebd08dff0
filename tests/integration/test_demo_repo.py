"""`modelfleet demo-repo --tenants 3`, built once through the CLI: real MiniLM export, real ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from modelfleet.cli import build_app
from modelfleet.demo import example_request
from modelfleet.repository.config import CONFIG_FILENAME, parse_config
from modelfleet.repository.folder import FolderRepository

pytestmark = pytest.mark.slow

TENANTS = ["tenant-00001", "tenant-00002", "tenant-00003"]
MODELS = ["identity", "minilm-sentiment", *TENANTS]
POSITIVE = "What a wonderful day, I absolutely love this and I am so happy!"
NEGATIVE = "This is awful, it broke at once and I hate it. Never again."


@dataclass(frozen=True)
class Built:
    path: Path
    output: str


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Built:
    pytest.importorskip("torch", reason="needs the demo extra")
    path = tmp_path_factory.mktemp("demo") / "repo"
    result = CliRunner().invoke(build_app(), ["demo-repo", str(path), "--tenants", "3"])
    assert result.exit_code == 0, result.output
    return Built(path, result.output)


def session(demo: Built, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(demo.path / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def logits(demo: Built, name: str, text: str) -> np.ndarray:
    feeds = {
        t["name"]: np.array(t["data"], np.int64).reshape(t["shape"]) for t in example_request(text)["inputs"]
    }
    out: np.ndarray = session(demo, name).run(["logits"], feeds)[0]
    assert out.shape == (1, 2)
    row: np.ndarray = out[0]
    return row


def test_every_config_validates_and_the_repository_lists_every_model(demo: Built) -> None:
    repo = FolderRepository(demo.path)
    assert repo.list_models() == MODELS
    for name in MODELS:
        config = parse_config((demo.path / name / CONFIG_FILENAME).read_text(), name)
        assert config.backend == "onnxruntime"
        assert repo.fetch(name).model_file(1).is_file()
        assert sorted(p.name for p in (demo.path / name).iterdir()) == ["1", CONFIG_FILENAME]


def test_identity_returns_its_input(demo: Built) -> None:
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(3, 16)
    assert np.array_equal(session(demo, "identity").run(["output"], {"input": x})[0], x)


def test_sentiment_tells_positive_from_negative(demo: Built) -> None:
    positive, negative = (
        logits(demo, "minilm-sentiment", POSITIVE),
        logits(demo, "minilm-sentiment", NEGATIVE),
    )
    assert positive[1] > positive[0]
    assert negative[0] > negative[1]


def test_the_export_reports_its_check_against_torch(demo: Built) -> None:
    assert "max |ORT - torch| = " in demo.output


def test_example_request_is_a_v2_body(demo: Built) -> None:
    body: dict[str, Any] = example_request("Hello world")
    ids, mask = body["inputs"]
    assert [ids["name"], mask["name"]] == ["input_ids", "attention_mask"]
    assert ids["datatype"] == mask["datatype"] == "INT64"
    assert ids["shape"] == mask["shape"] == [1, len(ids["data"])]
    assert ids["data"][0] == 101  # [CLS]
    assert mask["data"] == [1] * len(ids["data"])


def test_tenants_answer_differently(demo: Built) -> None:
    answers = [logits(demo, name, POSITIVE) for name in ["minilm-sentiment", *TENANTS]]
    for i, a in enumerate(answers):
        for b in answers[i + 1 :]:
            assert np.abs(a - b).max() > 1e-3


def test_tenants_hard_link_the_shared_weights(demo: Built) -> None:
    shared = (demo.path / "minilm-sentiment" / "1" / "encoder.weights").stat()
    for name in TENANTS:
        weights = (demo.path / name / "1" / "encoder.weights").stat()
        assert (weights.st_dev, weights.st_ino) == (shared.st_dev, shared.st_ino)
        assert (demo.path / name / "1" / "model.onnx").stat().st_size < 1_000_000
    assert shared.st_nlink == 1 + len(TENANTS)


def test_a_second_build_without_force_changes_nothing(demo: Built) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo.path.rglob("*")}
    result = CliRunner().invoke(build_app(), ["demo-repo", str(demo.path), "--tenants", "3"])
    assert result.exit_code == 0, result.output
    assert "exporting" not in result.output
    assert "tenants: 3 present, kept" in result.output
    assert {p: p.stat().st_mtime_ns for p in demo.path.rglob("*")} == before
