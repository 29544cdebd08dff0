import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import external_data_helper, numpy_helper

from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    WEIGHTS_FILENAME,
    save_with_external_weights,
)
from modelfleet.demo.shared_weights import (
    SHARED_FILES,
    BlobSession,
    move_to_blobs,
    store_in,
    write_shared_model,
)
from modelfleet.repository.weights import SHARED_PLACEHOLDER, blob_relpath, read_manifest, write_blob
from tests.unit.demo.tiny import FEEDS, LAYER, TUNED, run, tiny_classifier


def test_move_to_blobs_leaves_references_and_stores_each_value_once(tmp_path: Path) -> None:
    model = tiny_classifier()
    by_name = {t.name: t for t in model.graph.initializer}
    twin = f"{LAYER}.0.output.LayerNorm.weight"  # given the same value as layer 1's: one blob for both
    by_name[twin].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(by_name[TUNED[1]]), twin))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    manifest = move_to_blobs(model, store_in(tmp_path), keep=HEAD_INITIALIZERS)

    assert set(manifest.tensors) == set(values) - set(HEAD_INITIALIZERS)
    for tensor in model.graph.initializer:
        if tensor.name in HEAD_INITIALIZERS:
            assert not external_data_helper.uses_external_data(tensor)
            continue
        ref = manifest.tensors[tensor.name]
        external = {e.key: e.value for e in tensor.external_data}
        assert external == {"location": SHARED_PLACEHOLDER, "offset": "0", "length": str(ref.nbytes)}
        assert not tensor.raw_data
        assert (ref.datatype, ref.shape) == ("FP32", list(values[tensor.name].shape))
        assert (tmp_path / blob_relpath(ref.blob)).read_bytes() == values[tensor.name].tobytes()
    assert manifest.tensors[twin] == manifest.tensors[TUNED[1]]
    assert len(list((tmp_path / ".blobs").glob("*/*"))) == len(manifest.blobs) == len(manifest.tensors) - 1


def test_move_to_blobs_reads_a_weights_file_even_when_hard_linked(tmp_path: Path) -> None:
    expected = {t.name: numpy_helper.to_array(t) for t in tiny_classifier().graph.initializer}
    model = tiny_classifier()
    save_with_external_weights(model, tmp_path, inline=HEAD_INITIALIZERS)
    os.link(tmp_path / WEIGHTS_FILENAME, tmp_path / "copy.weights")  # as `cp -al` leaves it
    with pytest.raises(
        ValueError, match="'encoder.embeddings.word_embeddings.weight' is in 'encoder.weights', not"
    ):
        move_to_blobs(model, store_in(tmp_path))  # no folder given

    manifest = move_to_blobs(model, store_in(tmp_path), folder=tmp_path)
    assert set(manifest.tensors) == set(expected)
    for name, ref in manifest.tensors.items():
        assert (tmp_path / blob_relpath(ref.blob)).read_bytes() == expected[name].tobytes()


def test_a_shared_model_runs_with_its_blobs_supplied_and_fails_without(tmp_path: Path) -> None:
    folder = tmp_path / "model" / "1"
    folder.mkdir(parents=True)
    model = tiny_classifier()
    expected = run(model)
    manifest = move_to_blobs(model, store_in(tmp_path))
    write_shared_model(folder, model.SerializeToString(), manifest.model_dump_json())

    assert sorted(p.name for p in folder.iterdir()) == sorted(SHARED_FILES)
    assert (folder / SHARED_PLACEHOLDER).stat().st_size == 0
    assert read_manifest(folder) == manifest
    np.testing.assert_allclose(BlobSession(folder, tmp_path).run(["logits"], FEEDS)[0], expected, atol=1e-6)
    with pytest.raises(Exception, match="out of bounds"):  # the empty placeholder, not garbage
        ort.InferenceSession(str(folder / MODEL_FILENAME), providers=["CPUExecutionProvider"])


def test_a_blob_session_needs_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no weights.json"):
        BlobSession(tmp_path, tmp_path)


def test_a_blob_is_readable_by_every_user_of_the_repository(tmp_path: Path) -> None:
    # found by benchmarks/image_check.sh: a repository written by root and served by the image's
    # uid 10001 failed every adapter with PermissionError while blobs were mkstemp's 0600
    digest = write_blob(tmp_path, np.arange(6, dtype=np.float32))
    blob = tmp_path / blob_relpath(digest)
    assert blob.stat().st_mode & 0o777 == 0o644
    assert blob.read_bytes() == np.arange(6, dtype=np.float32).tobytes()
