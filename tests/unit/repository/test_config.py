import pytest

from modelfleet.errors import ModelLoadError
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import ModelConfig, VersionPolicy, complete_config, parse_config

FULL = """
backend: onnxruntime
max_batch_size: 8
inputs: [{name: input, datatype: FP32, shape: [-1, 16]}]
outputs: [{name: output, datatype: FP32, shape: [-1, 16]}]
version_policy: {latest: 2}
onnxruntime: {intra_op_threads: 1, graph_optimization: extended}
"""


def test_full_config_parses() -> None:
    config = parse_config(FULL, "identity")
    assert config.max_batch_size == 8
    assert config.inputs is not None
    assert config.inputs[0].spec() == TensorSpec("input", "FP32", (-1, 16))
    assert config.version_policy.latest == 2
    assert config.onnxruntime.intra_op_threads == 1


def test_empty_config_is_all_defaults() -> None:
    assert parse_config("", "m") == ModelConfig()
    assert parse_config("# nothing\n", "m") == ModelConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size: -1", "max_batch_size: Input should be greater than or equal to 0"),
        ("unknown_field: 1", "unknown_field: Extra inputs are not permitted"),
        ("backend: tensorflow", "backend: Input should be 'onnxruntime'"),
        ("inputs: [{name: a, datatype: FLOAT, shape: [1]}]", "inputs.0: unknown datatype 'FLOAT'"),
        (
            "inputs: [{name: a, datatype: FP32, shape: [-2]}]",
            "inputs.0.shape.0: Input should be greater than or equal to -1",
        ),
        (
            "max_batch_size: 4\ninputs: [{name: a, datatype: FP32, shape: [3]}]",
            "'a' has shape \\[3\\], but max_batch_size 4 needs -1 as its first",
        ),
        (
            "outputs: [{name: a, datatype: FP32, shape: [1]}, {name: a, datatype: FP32, shape: [1]}]",
            "duplicate tensor name",
        ),
        ("version_policy: {latest: 1, all: true}", "give one of latest / all / specific, not latest and all"),
        ("filename: ../x.onnx", "filename must be a plain file name"),
        ("name: other", "name 'other' differs from the folder name 'm'"),
        ("[1, 2]", "must be a mapping, got list"),
        ("a: [1,\n  b", "not valid YAML at line"),
        ("device: tpu", "device: Input should be 'auto', 'cpu', 'cuda' or 'neuron'"),
        ("traffic: {1: 0, 2: 0}", "traffic needs at least one version with a weight above 0"),
        ("traffic: {1: -5}", "traffic.1: Input should be greater than or equal to 0"),
        ("aliases: {Stable: 1}", "aliases \\['Stable'\\]: use lower-case letters"),
        ("backend: adapter", "an adapter needs backend: adapter, base: <model> and head"),
        ("base: other", "an adapter needs backend: adapter"),
        ("warmup: {sample: ../x.json}", "sample must be a plain file name"),
        (
            "dynamic_batching: {max_queue_delay_us: -1}",
            "dynamic_batching.max_queue_delay_us: Input should be greater",
        ),
    ],
)
def test_bad_configs_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        parse_config(text, "m")


def test_version_policies_select_highest_first() -> None:
    available = [1, 3, 2, 10]
    assert VersionPolicy().select(available) == [10]
    assert VersionPolicy(latest=2).select(available) == [10, 3]
    assert VersionPolicy(all=True).select(available) == [10, 3, 2, 1]
    assert VersionPolicy(specific=[2, 7]).select(available) == [2]


SIG_IN = [TensorSpec("ids", "INT64", (-1, -1)), TensorSpec("mask", "INT64", (-1, -1))]
SIG_OUT = [TensorSpec("logits", "FP32", (-1, 2))]


def test_completion_fills_everything_from_the_model() -> None:
    config = complete_config(ModelConfig(), SIG_IN, SIG_OUT, default_max_batch_size=32)
    assert config.max_batch_size == 32
    assert [t.spec() for t in config.inputs or []] == SIG_IN
    assert [t.spec() for t in config.outputs or []] == SIG_OUT


def test_completion_of_a_model_without_batch_dimension() -> None:
    config = complete_config(
        ModelConfig(), [TensorSpec("x", "FP32", (2, 3))], [TensorSpec("y", "FP32", (2, 3))], 32
    )
    assert config.max_batch_size == 0
    with pytest.raises(
        ModelLoadError,
        match="max_batch_size 4 needs a variable first dimension, but the model's 'x' has shape \\[2, 3\\]",
    ):
        complete_config(
            ModelConfig(max_batch_size=4),
            [TensorSpec("x", "FP32", (2, 3))],
            [TensorSpec("y", "FP32", (2, 3))],
            32,
        )


def test_config_may_narrow_a_dynamic_dimension_and_list_some_outputs() -> None:
    declared = parse_config(
        "inputs: [{name: ids, datatype: INT64, shape: [-1, 128]}, {name: mask, datatype: INT64, shape: [-1, 128]}]\n"
        "outputs: [{name: logits, datatype: FP32, shape: [-1, 2]}]",
        "m",
    )
    config = complete_config(declared, SIG_IN, [*SIG_OUT, TensorSpec("hidden", "FP32", (-1, 384))], 8)
    assert config.inputs is not None
    assert config.inputs[0].shape == [-1, 128]
    assert [t.name for t in config.outputs or []] == ["logits"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "inputs: [{name: ids, datatype: INT32, shape: [-1, -1]}, {name: mask, datatype: INT64, shape: [-1, -1]}]",
            "'ids' is INT64 in the model, config says INT32",
        ),
        (
            "inputs: [{name: ids, datatype: INT64, shape: [-1]}, {name: mask, datatype: INT64, shape: [-1, -1]}]",
            "'ids' has shape \\[-1, -1\\] in the model, config says \\[-1\\]",
        ),
        ("inputs: [{name: ids, datatype: INT64, shape: [-1, -1]}]", "the model also needs \\['mask'\\]"),
        ("outputs: [{name: probs, datatype: FP32, shape: [-1, 2]}]", "\\['probs'\\] not in the model"),
        (
            "outputs: [{name: logits, datatype: FP32, shape: [-1, 3]}]",
            "'logits' has shape \\[-1, 2\\] in the model, config says \\[-1, 3\\]",
        ),
    ],
)
def test_configs_contradicting_the_model_are_refused(text: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        complete_config(parse_config(text, "m"), SIG_IN, SIG_OUT, 8)


ENSEMBLE = """
backend: ensemble
inputs: [{name: a, datatype: FP32, shape: [-1, 4]}]
outputs: [{name: out, datatype: FP32, shape: [-1, 4]}]
"""


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            "steps: [{model: x, inputs: {input: a}, outputs: {output: mid}}, {model: y, inputs: {input: mid}, outputs: {output: out}}]",
            None,
        ),
        (
            "steps: [{model: y, inputs: {input: mid}, outputs: {output: out}}, {model: x, inputs: {input: a}, outputs: {output: mid}}]",
            None,
        ),
        (
            "steps: [{model: x, inputs: {input: nope}, outputs: {output: out}}]",
            "no step produces \\['nope'\\]",
        ),
        (
            "steps: [{model: x, inputs: {input: b}, outputs: {output: c}}, {model: y, inputs: {input: c}, outputs: {output: b}}]",
            "cycle|no step produces",
        ),
        (
            "steps: [{model: x, inputs: {input: a}, outputs: {output: other}}]",
            "no step produces the ensemble output\\(s\\) \\['out'\\]",
        ),
        (
            "steps: [{model: x, inputs: {input: a}, outputs: {output: out}}, {model: y, inputs: {input: a}, outputs: {output: out}}]",
            "produced twice",
        ),
    ],
)
def test_ensemble_steps_are_checked(steps: str, message: str | None) -> None:
    if message is None:
        assert parse_config(ENSEMBLE + steps, "m").steps is not None
    else:
        with pytest.raises(ModelLoadError, match=message):
            parse_config(ENSEMBLE + steps, "m")
