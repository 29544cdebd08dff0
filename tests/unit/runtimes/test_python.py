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


LEAKY = """
from pathlib import Path

class Model:
    def load(self, folder):
        self.folder = folder

    def infer(self, inputs):
        if inputs["x"][0, 0] > 0:
            (self.folder / "missing.bin").read_bytes()
        raise ValueError(f"no table in {self.folder} nor in /etc/modelfleet/tables/default.csv")
"""


def test_no_host_path_reaches_a_client_from_a_python_model(tmp_path: Path) -> None:
    model = load_runtime(write(tmp_path, LEAKY))
    with pytest.raises(InferenceFailed) as failed:
        model.infer({"x": np.ones((1, 2), np.float32)}, ["y"])
    assert str(tmp_path) not in failed.value.message
    assert "No such file or directory: 'm/1/missing.bin'" in failed.value.message
    with pytest.raises(BadRequest) as refused:
        model.infer({"x": -np.ones((1, 2), np.float32)}, ["y"])
    assert refused.value.message == "model 'm' refused the input: no table in m/1 nor in default.csv"


@pytest.mark.parametrize(
    "code",
    [
        "def broken(:",
        "open('/srv/secret/models/table.csv')",
        "import pathlib\nraise RuntimeError(str(pathlib.Path(__file__)))",
    ],
)
def test_no_host_path_in_a_load_error(tmp_path: Path, code: str) -> None:
    with pytest.raises(ModelLoadError) as failed:
        load_runtime(write(tmp_path, code))
    message = str(failed.value)
    assert str(tmp_path) not in message and "/srv/secret" not in message, message
    assert message.startswith("python model m/1/model.py failed to load: ")
