from pathlib import Path

import numpy as np
import pytest

from modelfleet.demo.onnx_files import (
    HEAD_INITIALIZERS,
    MODEL_FILENAME,
    WEIGHTS_FILENAME,
    identity_model,
    load_without_weights,
    read_initializers,
    save_with_external_weights,
    set_initializers,
    without_head,
)
from tests.unit.demo.tiny import EMBEDDINGS, HIDDEN, run, tiny_classifier


def test_identity_model_returns_its_input(tmp_path: Path) -> None:
    model = identity_model()
    assert (model.ir_version, model.opset_import[0].version) == (8, 17)
    (tmp_path / MODEL_FILENAME).write_bytes(model.SerializeToString())
    x = np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 16)
    assert np.array_equal(run(tmp_path / MODEL_FILENAME, {"input": x}), x)


def test_external_weights_hold_all_but_the_inline_initializers(tmp_path: Path) -> None:
    expected = run(tiny_classifier())
    save_with_external_weights(tiny_classifier(), tmp_path, inline=HEAD_INITIALIZERS)

    model = load_without_weights(tmp_path / MODEL_FILENAME)
    locations = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer}
    assert {n for n, ext in locations.items() if not ext} == set(HEAD_INITIALIZERS)
    assert locations[EMBEDDINGS]["location"] == WEIGHTS_FILENAME  # a plain name: ORT refuses paths
    assert int(locations[EMBEDDINGS]["offset"]) % 4096 == 0
    assert (tmp_path / MODEL_FILENAME).stat().st_size < 6_000  # the head, 3 KiB, and the graph
    assert np.allclose(run(tmp_path / MODEL_FILENAME), expected, atol=1e-5)


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
    with pytest.raises(
        ValueError, match=r"\['encoder.embeddings.word_embeddings.weight'\] are stored as external data"
    ):
        read_initializers(load_without_weights(tmp_path / MODEL_FILENAME), [EMBEDDINGS])


def test_without_head_outputs_what_the_head_reads() -> None:
    classifier = tiny_classifier()
    base = without_head(classifier, "embedding")

    assert [o.name for o in base.graph.output] == ["embedding"]
    dims = base.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", HIDDEN]
    assert not set(HEAD_INITIALIZERS) & {t.name for t in base.graph.initializer}
    embedding = run(base)
    head = read_initializers(classifier, HEAD_INITIALIZERS)
    np.testing.assert_allclose(
        embedding @ head["head.weight"].T + head["head.bias"], run(classifier), atol=1e-5
    )
    assert len(classifier.graph.node) == len(base.graph.node) + 1  # the classifier is left alone


def test_without_head_refuses_a_graph_without_one() -> None:
    with pytest.raises(ValueError, match=r"expected one head node reading \['head.weight', 'head.bias'\]"):
        without_head(identity_model(), "embedding")
