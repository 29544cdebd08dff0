import numpy as np
import pytest

from modelfleet.bench.synth import TensorMeta, concrete_shape, parse_signature, random_inputs, random_tensor

RNG = np.random.default_rng(0)


def meta(name: str, datatype: str, *shape: int) -> TensorMeta:
    return TensorMeta(name, datatype, shape)


def test_parse_signature_reads_inputs() -> None:
    doc = {
        "name": "m",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    assert parse_signature(doc, "m") == (meta("x", "FP32", -1, 16),)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "lists no inputs"),
        ({"inputs": []}, "lists no inputs"),
        ({"inputs": [{"name": "x", "shape": [1]}]}, "malformed input"),
        ({"inputs": [{"name": "x", "datatype": "BF16", "shape": [1]}]}, "unsupported datatype BF16"),
    ],
)
def test_parse_signature_rejects_bad_metadata(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_signature(doc, "m")


def test_leading_variable_dim_is_batch_and_others_seq_len() -> None:
    assert concrete_shape(meta("x", "FP32", -1, 16), 4, 32, {}) == (4, 16)
    assert concrete_shape(meta("x", "INT64", -1, -1), 2, 128, {}) == (2, 128)
    assert concrete_shape(meta("x", "INT64", 3, -1, 8), 2, 10, {}) == (3, 10, 8)


def test_shape_override_replaces_the_shape() -> None:
    assert concrete_shape(meta("x", "INT64", -1, -1), 1, 16, {"x": (8, 64)}) == (8, 64)


@pytest.mark.parametrize("override", [(8,), (8, 15), (1, 16, 1)])
def test_shape_override_must_fit_declared_shape(override: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="does not fit the declared shape"):
        concrete_shape(meta("x", "FP32", -1, 16), 1, 16, {"x": override})


@pytest.mark.parametrize("name", ["attention_mask", "input_mask", "MASK"])
def test_integer_masks_are_ones(name: str) -> None:
    t = random_tensor(meta(name, "INT64", -1, -1), (2, 8), RNG)
    assert t.data.dtype == np.int64
    assert t.shape == (2, 8)
    assert np.all(t.data == 1)


def test_token_type_ids_are_zeros() -> None:
    assert np.all(random_tensor(meta("token_type_ids", "INT64", -1), (64,), RNG).data == 0)


def test_other_integers_are_in_range() -> None:
    t = random_tensor(meta("input_ids", "INT32", -1), (5000,), RNG)
    assert t.data.dtype == np.int32
    assert t.data.min() >= 0 and t.data.max() < 1000
    assert len(np.unique(t.data)) > 100
    small = random_tensor(meta("ids", "INT8", -1), (5000,), RNG)
    assert small.data.min() >= 0 and small.data.max() <= 127


@pytest.mark.parametrize(
    ("datatype", "dtype"), [("FP16", np.float16), ("FP32", np.float32), ("FP64", np.float64)]
)
def test_floats_are_uniform_in_unit_interval(datatype: str, dtype: type) -> None:
    t = random_tensor(meta("x", datatype, -1, 4), (100, 4), RNG)
    assert t.data.dtype == dtype
    assert t.data.min() >= 0 and t.data.max() < 1


def test_bool_and_bytes() -> None:
    flags = random_tensor(meta("flag", "BOOL", -1), (1000,), RNG)
    assert flags.data.dtype == np.bool_
    assert 0 < flags.data.sum() < 1000
    text = random_tensor(meta("text", "BYTES", -1, 2), (3, 2), RNG)
    assert text.data.dtype == object
    assert text.shape == (3, 2)
    assert all(isinstance(v, bytes) and len(v) == 8 and v.isascii() for v in text.data.ravel())


def test_random_inputs_follow_signature_order() -> None:
    signature = (meta("input_ids", "INT64", -1, -1), meta("attention_mask", "INT64", -1, -1))
    tensors = random_inputs(signature, RNG, batch_size=2, seq_len=7)
    assert [(t.name, t.shape) for t in tensors] == [("input_ids", (2, 7)), ("attention_mask", (2, 7))]
