from pathlib import Path

import numpy as np
import pytest

from modelfleet.errors import BadRequest, InferenceFailed, ModelLoadError
from modelfleet.repository.config import ModelConfig, TensorConfig
from modelfleet.runtimes.base import LoadSpec, load_runtime

CONFIG = ModelConfig(
    backend="python",
    max_batch_size=8,
    inputs=[TensorConfig(name="x", datatype="FP32", shape=[-1, 2])],
    outputs=[TensorConfig(name="y", datatype="FP32", shape=[-1, 2])],
)


def write(tmp_path: Path, code: str, config: ModelConfig = CONFIG) -> LoadSpec:
    path = tmp_path / "m" / "1" / "model.py"
    path.parent.mkdir(parents=True)
    path.write_text(code)
    (path.parent / "scale.txt").write_text("3")
    return LoadSpec("m", 1, path, config, 1)


GOOD = """
import numpy as np

class Model:
    def load(self, folder):
        self.scale = float((folder / "scale.txt").read_text())

    def infer(self, inputs):
        x = inputs["x"]
        if (x < 0).any():
            raise ValueError("x must not be negative")
        return {"y": x * self.scale}
"""


def test_a_python_model_loads_from_its_folder_and_runs(tmp_path: Path) -> None:
    model = load_runtime(write(tmp_path, GOOD))
    assert [t.name for t in model.inputs] == ["x"]
    assert model.may_run_inline is False  # user code may block: always on its thread
    (y,) = model.infer({"x": np.ones((2, 2), np.float32)}, ["y"])
    assert y.dtype == np.float32
    assert y.tolist() == [[3.0, 3.0], [3.0, 3.0]]
    with pytest.raises(BadRequest, match="model 'm' refused the input: x must not be negative"):
        model.infer({"x": -np.ones((1, 2), np.float32)}, ["y"])
    model.unload()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("raise RuntimeError('boom')", "python model m/1/model.py failed to load: RuntimeError: boom"),
        ("class Other: pass", "failed to load: AttributeError"),
        ("class Model: pass", "must define class Model with a method infer"),
        ("def broken(:", "failed to load: SyntaxError"),
    ],
)
def test_python_models_that_cannot_load_say_why(tmp_path: Path, code: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_runtime(write(tmp_path, code))


def test_wrong_results_are_500s_naming_the_model(tmp_path: Path) -> None:
    model = load_runtime(
        write(tmp_path, "class Model:\n    def infer(self, inputs):\n        return {'z': 1}\n")
    )
    with pytest.raises(InferenceFailed, match="model 'm' did not return output 'y'"):
        model.infer({"x": np.ones((1, 2), np.float32)}, ["y"])
    model = load_runtime(
        write(tmp_path / "b", "class Model:\n    def infer(self, inputs):\n        return [1]\n")
    )
    with pytest.raises(InferenceFailed, match="returned list, not a dict of arrays"):
        model.infer({"x": np.ones((1, 2), np.float32)}, ["y"])


def test_inputs_and_outputs_must_be_declared(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="must declare its inputs and outputs"):
        load_runtime(write(tmp_path, GOOD, ModelConfig(backend="python")))
