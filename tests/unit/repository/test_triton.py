from __future__ import annotations

import pytest

from modelfleet.repository.triton import TritonConfigError, parse_pbtxt, read_triton_config

BERT = """
# a Triton model, as in seed 003
name: "bert"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [
  { name: "input_ids", data_type: TYPE_INT64, dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }
]
output [ { name: "logits", data_type: TYPE_FP32, dims: [ 2 ] } ]
dynamic_batching { preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 100 }
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 2 } }
optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
parameters { key: "x" value: { string_value: "y" } }
"""

ENSEMBLE = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 0
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "label" data_type: TYPE_STRING dims: [ 1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "tok" model_version: -1
      input_map { key: "text" value: "text" }
      output_map { key: "ids" value: "ids" } },
    { model_name: "clf" model_version: 3
      input_map { key: "ids" value: "ids" }
      output_map { key: "label" value: "label" } }
  ]
}
"""


def test_a_batched_onnx_model_maps_field_by_field() -> None:
    read = read_triton_config(BERT, "bert")
    config = read.config
    assert config.backend == "onnxruntime" and config.max_batch_size == 32
    assert [(t.name, t.datatype, t.shape) for t in config.inputs or []] == [
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]
    assert (config.outputs or [])[0].shape == [-1, 2]
    assert config.dynamic_batching.preferred_batch_sizes == [8, 16]
    assert config.dynamic_batching.max_queue_delay_us == 100
    assert config.instances == 2 and config.device == "cpu"
    assert config.version_policy.latest == 2
    assert read.ignored == ["optimization", "parameters"]


def test_an_ensemble_maps_its_steps() -> None:
    config = read_triton_config(ENSEMBLE, "pipeline").config
    assert config.backend == "ensemble" and config.max_batch_size == 0
    assert [(s.model, s.version, s.inputs, s.outputs) for s in config.steps or []] == [
        ("tok", None, {"text": "text"}, {"ids": "ids"}),
        ("clf", "3", {"ids": "ids"}, {"label": "label"}),
    ]
    assert (config.inputs or [])[0].datatype == "BYTES"


def test_refusals_name_the_field() -> None:
    with pytest.raises(
        TritonConfigError, match="platform/backend 'tensorflow_savedmodel' has no runtime here"
    ):
        read_triton_config('platform: "tensorflow_savedmodel"', "m")
    with pytest.raises(TritonConfigError, match="differs from the folder name"):
        read_triton_config('name: "a" backend: "onnxruntime"', "b")
    with pytest.raises(TritonConfigError, match="not closed"):
        parse_pbtxt("input { name: 'x'")
    with pytest.raises(TritonConfigError, match="data_type TYPE_BF16 is not served"):
        read_triton_config('backend: "onnxruntime" input [{ name: "x" data_type: TYPE_BF16 dims: [1] }]', "m")
    assert parse_pbtxt("a: 1 a: 2 b: [1, 2] c { d: 'e\\'f' }") == {
        "a": [1, 2],
        "b": [1, 2],
        "c": {"d": "e'f"},
    }
