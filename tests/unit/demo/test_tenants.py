from pathlib import Path

import numpy as np
import pytest
from onnx import external_data_helper

from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    load_without_weights,
    read_initializers,
)
from modelfleet.demo.shared_weights import SHARED_FILES, BlobSession
from modelfleet.demo.tenants import (
    MAX_TENANTS,
    AdapterWriter,
    FullCopyWriter,
    bitfit_names,
    tenant_head,
    tenant_name,
    tuned_tensors,
)
from modelfleet.repository.weights import MANIFEST, WeightsManifest, blob_relpath, read_manifest, write_blob
from tests.unit.demo.tiny import FEEDS, LAYER, TUNED, fake_minilm, run

# --- names, heads and tuned tensors


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
    assert 0 < np.abs(w1 - weight).mean() < weight.std()  # small next to the weights' own spread


def test_a_constant_base_head_still_gives_tenants_different_heads() -> None:
    weight, bias = np.ones((2, 8), np.float32), np.zeros(2, np.float32)
    assert not np.allclose(tenant_head(weight, bias, 1)[0], tenant_head(weight, bias, 2)[0])


def test_tuned_tensors_are_deterministic_small_changes() -> None:
    values = {"a": np.linspace(-1, 1, 64, dtype=np.float32), "b": np.ones(8, np.float32)}
    first, again, other = tuned_tensors(values, 1), tuned_tensors(values, 1), tuned_tensors(values, 2)
    for name, value in values.items():
        assert np.array_equal(first[name], again[name])
        assert not np.allclose(first[name], other[name])
        assert first[name].dtype == value.dtype
    assert 0 < np.abs(first["a"] - values["a"]).mean() < values["a"].std()


def test_bitfit_takes_the_last_layers_biases_and_layernorms() -> None:
    names = [
        "encoder.embeddings.LayerNorm.weight",
        "encoder.encoder.layer.1.output.dense.bias",
        "encoder.encoder.layer.10.attention.self.query.bias",
        "encoder.encoder.layer.10.attention.output.LayerNorm.weight",
        "encoder.encoder.layer.10.output.LayerNorm.bias",
        "encoder.encoder.layer.10.attention.self.query.weight",
        "onnx::MatMul_843",
        "encoder.encoder.layer.0.output.LayerNorm.bias",
        "head.bias",
    ]
    assert bitfit_names(names) == [names[2], names[3], names[4]]


def test_bitfit_needs_encoder_layers() -> None:
    with pytest.raises(ValueError, match=r"no encoder layer \('.layer.N.'\)"):
        bitfit_names(["head.weight", "head.bias"])


# --- adapters


def test_adapters_hold_their_own_head_as_blobs(tmp_path: Path) -> None:
    sentiment, _ = fake_minilm(tmp_path)
    head = read_initializers(load_without_weights(sentiment / MODEL_FILENAME), HEAD_INITIALIZERS)
    writer = AdapterWriter(sentiment, tmp_path)
    manifests: list[WeightsManifest | None] = []
    for index in (1, 2, 1):
        folder = tmp_path / f"{tenant_name(index)}-{len(manifests)}"
        folder.mkdir()
        writer.write(folder, index)
        assert [p.name for p in folder.iterdir()] == [MANIFEST]
        manifests.append(read_manifest(folder))
    first, second, again = manifests
    assert first is not None and second is not None
    assert first == again  # the same tenant: the same blobs, stored once
    assert first.blobs.isdisjoint(second.blobs)
    expected = tenant_head(head["head.weight"], head["head.bias"], 1)
    for name, value in zip(("weight", "bias"), expected, strict=True):
        ref = first.tensors[name]
        assert (ref.datatype, ref.shape) == ("FP32", list(value.shape))
        assert (tmp_path / blob_relpath(ref.blob)).read_bytes() == value.tobytes()


# --- full copies


def test_full_copies_share_the_base_blobs_and_keep_their_tuned_tensors_inline(tmp_path: Path) -> None:
    sentiment, base = fake_minilm(tmp_path)
    blobs_before = sorted((tmp_path / ".blobs").glob("*/*"))
    base_manifest = read_manifest(base)
    assert base_manifest is not None
    writer = FullCopyWriter(sentiment, base)
    folder = tmp_path / "copy"
    folder.mkdir()
    writer.write(folder, 1)

    assert sorted(p.name for p in folder.iterdir()) == sorted(SHARED_FILES)
    manifest = read_manifest(folder)
    assert manifest is not None
    assert manifest.tensors == {n: r for n, r in base_manifest.tensors.items() if n not in TUNED}
    assert sorted((tmp_path / ".blobs").glob("*/*")) == blobs_before  # no blob of its own
    model = load_without_weights(folder / MODEL_FILENAME)
    inline = {t.name for t in model.graph.initializer if not external_data_helper.uses_external_data(t)}
    assert inline == {*TUNED, *HEAD_INITIALIZERS}


def test_full_copies_are_deterministic_fine_tuned_versions_of_the_classifier(tmp_path: Path) -> None:
    sentiment, base = fake_minilm(tmp_path)
    writer = FullCopyWriter(sentiment, base)
    files = {}
    for key, index in (("a", 1), ("b", 2), ("c", 1)):  # the graph is edited in place between tenants
        (tmp_path / key).mkdir()
        writer.write(tmp_path / key, index)
        files[key] = (tmp_path / key / MODEL_FILENAME).read_bytes()
    assert files["a"] == files["c"]
    assert files["a"] != files["b"]

    expected = run(sentiment / MODEL_FILENAME)
    first, second = (BlobSession(tmp_path / key, tmp_path).run(["logits"], FEEDS)[0] for key in "ab")
    assert first.shape == expected.shape
    assert np.abs(first - second).max() > 1e-3
    assert np.abs(first - expected).max() > 1e-3
    assert np.abs(first - expected).max() < np.abs(expected).max()  # changed, not replaced


def test_full_copies_refuse_a_base_with_other_weights(tmp_path: Path) -> None:
    sentiment, base = fake_minilm(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    manifest = read_manifest(base)
    assert manifest is not None
    name = f"{LAYER}.0.output.dense.bias"
    changed = manifest.tensors[name].model_copy(
        update={"blob": write_blob(tmp_path, np.zeros(3, np.float32))}
    )
    tensors = manifest.tensors | {name: changed}
    (other / MANIFEST).write_text(manifest.model_copy(update={"tensors": tensors}).model_dump_json())
    with pytest.raises(ValueError, match=f"minilm-sentiment's '{name}' is not one of minilm-base's blobs"):
        FullCopyWriter(sentiment, other)
