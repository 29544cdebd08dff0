"""The demo repository builder without torch: a tiny stand-in for minilm-sentiment with the same
head initializers and an external-data weights file, from which tenants are written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelfleet.demo import build_demo_repo
from modelfleet.demo.builder import IDENTITY, SENTIMENT, VERSION, _needs_build, _staged
from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    WEIGHTS_FILENAME,
    identity_model,
    load_without_weights,
    read_initializers,
    save_with_external_weights,
    set_initializers,
)
from modelfleet.demo.tenants import MAX_TENANTS, TenantWriter, tenant_head, tenant_name
from modelfleet.repository.config import CONFIG_FILENAME, parse_config
from modelfleet.repository.folder import FolderRepository

WIDTH, HIDDEN = 4, 1024  # encoder.w is 16 KiB: large enough to be page-aligned in the weights file
X = np.arange(3 * WIDTH, dtype=np.float32).reshape(3, WIDTH) / 10


def tiny_classifier() -> onnx.ModelProto:
    """x [batch, 4] -> MatMul(encoder.w) + encoder.b -> Gemm(head.weight, head.bias) -> logits [batch, 2]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(WIDTH, HIDDEN)).astype(np.float32), "encoder.w"),
        numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), "encoder.b"),
        numpy_helper.from_array(rng.normal(size=(2, HIDDEN)).astype(np.float32), "head.weight"),
        numpy_helper.from_array(np.array([0.5, -0.5], np.float32), "head.bias"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "encoder.w"], ["h0"]),
            helper.make_node("Add", ["h0", "encoder.b"], ["h"]),
            helper.make_node("Gemm", ["h", "head.weight", "head.bias"], ["logits"], transB=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model_path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: x})[0]
    return out


def fake_sentiment(repo: Path) -> Path:
    """repo/minilm-sentiment built from the tiny classifier, as the builder would lay it out."""
    version = repo / SENTIMENT / VERSION
    version.mkdir(parents=True)
    save_with_external_weights(tiny_classifier(), version, inline=HEAD_INITIALIZERS)
    (repo / SENTIMENT / CONFIG_FILENAME).write_text("backend: onnxruntime\n")
    return version


# --- tenant names and heads


def test_tenant_names_have_five_digits_and_sort_in_index_order() -> None:
    assert tenant_name(1) == "tenant-00001"
    assert tenant_name(MAX_TENANTS) == "tenant-99999"
    names = [tenant_name(i) for i in (1, 9, 10, 100, 12345)]
    assert sorted(names) == names


@pytest.mark.parametrize("index", [0, -1, MAX_TENANTS + 1])
def test_tenant_name_refuses_indices_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match="between 1 and"):
        tenant_name(index)


def test_tenant_heads_are_deterministic_and_differ_between_tenants() -> None:
    weight, bias = np.arange(16, dtype=np.float32).reshape(2, 8), np.zeros(2, np.float32)
    w1, b1 = tenant_head(weight, bias, 1)
    again = tenant_head(weight, bias, 1)
    w2, _ = tenant_head(weight, bias, 2)
    assert np.array_equal(w1, again[0])
    assert np.array_equal(b1, again[1])
    assert not np.allclose(w1, w2)
    assert (w1.shape, b1.shape) == ((2, 8), (2,))
    assert w1.dtype == b1.dtype == np.dtype(np.float32)
    assert np.array_equal(weight, np.arange(16, dtype=np.float32).reshape(2, 8))  # the base is left alone


# --- ONNX files


def test_identity_model_returns_its_input(tmp_path: Path) -> None:
    model = identity_model()
    assert (model.ir_version, model.opset_import[0].version) == (8, 17)
    (tmp_path / MODEL_FILENAME).write_bytes(model.SerializeToString())
    x = np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 16)
    assert np.array_equal(run(tmp_path / MODEL_FILENAME, x), x)


def test_external_weights_hold_all_but_the_inline_initializers(tmp_path: Path) -> None:
    expected = run_in_memory(tiny_classifier(), X)
    save_with_external_weights(tiny_classifier(), tmp_path, inline=HEAD_INITIALIZERS)

    model = load_without_weights(tmp_path / MODEL_FILENAME)
    locations = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer}
    assert {n for n, ext in locations.items() if ext} == {"encoder.w", "encoder.b"}
    assert locations["encoder.w"]["location"] == WEIGHTS_FILENAME  # a plain name: ORT refuses paths
    assert int(locations["encoder.w"]["offset"]) % 4096 == 0
    assert (tmp_path / MODEL_FILENAME).stat().st_size < 10_000  # the head only, 8 KiB
    assert np.allclose(run(tmp_path / MODEL_FILENAME, X), expected, atol=1e-5)


def run_in_memory(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"x": x})[0]
    return out


def test_set_initializers_replaces_values_inline() -> None:
    model = tiny_classifier()
    set_initializers(model, {"head.bias": np.array([3.0, 4.0], np.float32)})
    assert read_initializers(model, ["head.bias"])["head.bias"].tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"head.nope": np.zeros(2, np.float32)}, r"\['head.nope'\] not in the graph"),
        ({"head.bias": np.zeros(3, np.float32)}, r"'head.bias' is FLOAT \[2\] in the graph.*FLOAT \[3\]"),
        ({"head.bias": np.zeros(2, np.float64)}, r"'head.bias' is FLOAT \[2\] in the graph.*DOUBLE \[2\]"),
    ],
)
def test_set_initializers_refuses_unknown_names_and_other_shapes(
    values: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        set_initializers(tiny_classifier(), values)


def test_read_initializers_refuses_external_ones(tmp_path: Path) -> None:
    save_with_external_weights(tiny_classifier(), tmp_path, inline=HEAD_INITIALIZERS)
    with pytest.raises(ValueError, match=r"\['encoder.w'\] are stored as external data"):
        read_initializers(load_without_weights(tmp_path / MODEL_FILENAME), ["encoder.w"])


def test_tenants_get_their_own_head_and_a_hard_link_to_the_weights(tmp_path: Path) -> None:
    base = fake_sentiment(tmp_path)
    writer = TenantWriter(base)
    outputs = []
    for index in (1, 2):
        folder = tmp_path / tenant_name(index)
        folder.mkdir()
        writer.write(folder, index)
        assert (folder / WEIGHTS_FILENAME).stat().st_ino == (base / WEIGHTS_FILENAME).stat().st_ino
        outputs.append(run(folder / MODEL_FILENAME, X))
    assert not writer.copied
    base_out = run(base / MODEL_FILENAME, X)
    assert not np.allclose(outputs[0], base_out)
    assert not np.allclose(outputs[0], outputs[1])


# --- the builder, with minilm-sentiment already present (so torch is never needed)


@pytest.fixture
def no_torch_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the torch exporter fails: these builds must not need it."""
    monkeypatch.setitem(sys.modules, "modelfleet.demo.minilm", None)


@pytest.mark.usefixtures("no_torch_export")
def test_build_writes_identity_and_tenants_that_the_repository_accepts(tmp_path: Path) -> None:
    fake_sentiment(tmp_path)
    lines: list[str] = []
    build_demo_repo(tmp_path, tenants=2, log=lines.append)

    assert FolderRepository(tmp_path).list_models() == [IDENTITY, SENTIMENT, "tenant-00001", "tenant-00002"]
    for name in (IDENTITY, "tenant-00001", "tenant-00002"):
        config = parse_config((tmp_path / name / CONFIG_FILENAME).read_text(), name)
        assert config.backend == "onnxruntime"
        assert FolderRepository(tmp_path).fetch(name).model_file(1).is_file()
    assert sorted(p.name for p in (tmp_path / "tenant-00001").iterdir()) == [VERSION, CONFIG_FILENAME]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert f"{SENTIMENT}: present, kept" in lines
    assert "tenants: 2/2 written" in lines[-2]


@pytest.mark.usefixtures("no_torch_export")
def test_second_build_without_force_changes_nothing(tmp_path: Path) -> None:
    fake_sentiment(tmp_path)
    build_demo_repo(tmp_path, tenants=2, log=lambda _: None)
    before = snapshot(tmp_path)
    lines: list[str] = []
    build_demo_repo(tmp_path, tenants=2, log=lines.append)
    assert snapshot(tmp_path) == before
    assert lines[:3] == [
        f"{IDENTITY}: present, kept",
        f"{SENTIMENT}: present, kept",
        "tenants: 2 present, kept",
    ]


@pytest.mark.usefixtures("no_torch_export")
def test_more_tenants_later_adds_only_the_new_ones(tmp_path: Path) -> None:
    fake_sentiment(tmp_path)
    build_demo_repo(tmp_path, tenants=1, log=lambda _: None)
    lines: list[str] = []
    build_demo_repo(tmp_path, tenants=3, log=lines.append)
    assert "tenants: 1 present, kept" in lines
    assert any(line.startswith("tenants: 2/2 written") for line in lines)


@pytest.mark.usefixtures("no_torch_export")
def test_an_incomplete_model_folder_is_refused_unless_forced(tmp_path: Path) -> None:
    fake_sentiment(tmp_path)
    (tmp_path / IDENTITY / VERSION).mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"identity is in the way.*pass --force"):
        build_demo_repo(tmp_path, log=lambda _: None)
    assert _needs_build(tmp_path / IDENTITY, (MODEL_FILENAME,), force=True)


@pytest.mark.usefixtures("no_torch_export")
def test_a_new_repository_appears_only_when_complete(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(ImportError):  # minilm-sentiment cannot be built: identity was already written
        build_demo_repo(tmp_path / "repo", log=lines.append)
    assert lines[0] == f"{IDENTITY}: written"
    assert list(tmp_path.iterdir()) == []


def test_a_file_at_the_repository_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        build_demo_repo(tmp_path / "repo", log=lambda _: None)


def test_a_failed_build_leaves_neither_the_model_nor_its_staging_folder(tmp_path: Path) -> None:
    def fail_half_way() -> None:
        with _staged(tmp_path / "model") as staging:
            (staging / CONFIG_FILENAME).write_text("")
            raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        fail_half_way()
    assert list(tmp_path.iterdir()) == []


def test_a_constant_base_head_still_gives_tenants_different_heads() -> None:
    weight, bias = np.ones((2, 8), np.float32), np.zeros(2, np.float32)
    assert not np.allclose(tenant_head(weight, bias, 1)[0], tenant_head(weight, bias, 2)[0])


def test_staging_replaces_an_existing_model_whole(tmp_path: Path) -> None:
    (tmp_path / "model" / "2").mkdir(parents=True)
    with _staged(tmp_path / "model") as staging:
        (staging / "1").mkdir()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["1"]


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}
