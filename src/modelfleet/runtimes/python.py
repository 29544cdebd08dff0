"""Python models: pre- and post-processing written as a class, run on the model's executor thread.

`NAME/VERSION/model.py` defines

    class Model:
        def load(self, folder: pathlib.Path) -> None: ...            # optional
        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
        def unload(self) -> None: ...                                  # optional

with inputs and outputs declared in config.yaml. The code runs in the server process with the
server's rights, so Python models are off unless the server is started with --python-models; a
model gets only its own inputs and its own folder (no handle on other models or the server).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelfleet.errors import BadRequest, InferenceFailed, ModelfleetError, ModelLoadError, without_paths
from modelfleet.protocol.datatypes import DATATYPES
from modelfleet.runtimes.base import LoadSpec


class PythonModel:
    may_run_inline = False  # user code may block or wait: always on its thread

    def __init__(self, spec: LoadSpec, instance: Any) -> None:
        config = spec.config
        if config.inputs is None or config.outputs is None:
            raise ModelLoadError("a python model must declare its inputs and outputs in config.yaml")
        self.inputs = [t.spec() for t in config.inputs]
        self.outputs = [t.spec() for t in config.outputs]
        self._name = spec.name
        self._folder = str(spec.path.parent)
        self._where = f"{spec.name}/{spec.version}"
        self._instance = instance
        self._kinds = {t.name: DATATYPES[t.datatype] for t in config.outputs}

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        try:
            produced = self._instance.infer(dict(inputs))
        except ModelfleetError:
            raise
        except ValueError as exc:  # the model's way of saying the input is wrong
            raise BadRequest(f"model '{self._name}' refused the input: {self._shown(exc)}") from None
        except Exception as exc:
            raise InferenceFailed(
                f"model '{self._name}' failed: {type(exc).__name__}: {self._shown(exc)}"
            ) from None
        if not isinstance(produced, dict):
            raise InferenceFailed(
                f"model '{self._name}' returned {type(produced).__name__}, not a dict of arrays"
            )
        result = []
        for name in outputs:
            if name not in produced:
                raise InferenceFailed(f"model '{self._name}' did not return output '{name}'")
            dt = self._kinds[name]
            result.append(np.asarray(produced[name], dtype=dt.dtype))
        return result

    def _shown(self, exc: Exception) -> str:
        return _shown(exc, self._folder, self._where)

    def unload(self) -> None:
        unload = getattr(self._instance, "unload", None)
        if callable(unload):
            unload()
        self._instance = None


def load(spec: LoadSpec) -> PythonModel:
    if not spec.path.is_file():
        raise ModelLoadError(f"version {spec.version} has no {spec.path.name}")
    module_name = f"modelfleet_user_models.{spec.name.replace('.', '_').replace('-', '_')}_v{spec.version}"
    try:
        module_spec = importlib.util.spec_from_file_location(module_name, spec.path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        instance = module.Model()
        if hasattr(instance, "load"):
            instance.load(spec.path.parent)
    except Exception as exc:
        where = f"{spec.name}/{spec.version}"
        raise ModelLoadError(
            f"python model {where}/{spec.path.name} failed to load: {type(exc).__name__}: "
            f"{_shown(exc, str(spec.path.parent), where)}"
        ) from None
    finally:
        sys.modules.pop(module_name, None)
    if not callable(getattr(instance, "infer", None)):
        raise ModelLoadError(f"{spec.path.name} must define class Model with a method infer(inputs)")
    return PythonModel(spec, instance)


def _shown(exc: Exception, folder: str, where: str) -> str:
    """A user model's exception for a client: the version folder as name/version, no other paths."""
    return without_paths(str(exc).replace(folder, where))
