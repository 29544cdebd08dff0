from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from modelfleet.engine.loading import warm_up
from modelfleet.errors import BadRequest, ModelLoadError
from modelfleet.protocol.v2 import TensorSpec
from modelfleet.repository.config import ModelConfig, TensorConfig, WarmupConfig


class Recorder:
    inputs = [TensorSpec("input_ids", "INT64", (-1, -1)), TensorSpec("attention_mask", "INT64", (-1, -1))]
    outputs = [TensorSpec("logits", "FP32", (-1, 2))]

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self.fail = fail

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        self.calls.append(dict(inputs))
        if self.fail:
            raise BadRequest("shape not supported")
        return [np.zeros((1, 2), np.float32)]

    def unload(self) -> None:
        pass


def config(**warmup: object) -> ModelConfig:
    return ModelConfig(
        max_batch_size=8,
        inputs=[TensorConfig(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in Recorder.inputs],
        outputs=[TensorConfig(name="logits", datatype="FP32", shape=[-1, 2])],
        warmup=WarmupConfig(**warmup),  # type: ignore[arg-type]
    )


def test_generated_warm_up_inputs_follow_the_signature(tmp_path: Path) -> None:
    runtime = Recorder()
    warm_up(runtime, config(runs=2), tmp_path)
    assert len(runtime.calls) == 2
    feeds = runtime.calls[0]
    assert feeds["input_ids"].shape == (1, 8)
    assert feeds["input_ids"].dtype == np.int64
    assert not feeds["input_ids"].any()
    assert feeds["attention_mask"].all()  # inputs named like *mask* are ones


def test_warm_up_can_be_off_or_default(tmp_path: Path) -> None:
    runtime = Recorder()
    warm_up(runtime, config(runs=0), tmp_path)
    warm_up(runtime, config(), tmp_path, default_runs=0)
    assert runtime.calls == []
    warm_up(runtime, config(), tmp_path)
    assert len(runtime.calls) == 1


def test_warm_up_from_a_sample_request(tmp_path: Path) -> None:
    (tmp_path / "warmup.json").write_text(
        '{"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [101, 7, 102]},'
        ' {"name": "attention_mask", "shape": [1, 3], "datatype": "INT64", "data": [1, 1, 1]}]}'
    )
    runtime = Recorder()
    warm_up(runtime, config(sample="warmup.json"), tmp_path)
    assert runtime.calls[0]["input_ids"].tolist() == [[101, 7, 102]]


def test_a_failing_warm_up_fails_the_load_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="warm-up failed: shape not supported"):
        warm_up(Recorder(fail=True), config(), tmp_path)
    with pytest.raises(ModelLoadError, match="warm-up sample missing.json cannot be read"):
        warm_up(Recorder(), config(sample="missing.json"), tmp_path)
    (tmp_path / "bad.json").write_text('{"inputs": 3}')
    with pytest.raises(ModelLoadError, match="warm-up sample bad.json: invalid inference request"):
        warm_up(Recorder(), config(sample="bad.json"), tmp_path)
