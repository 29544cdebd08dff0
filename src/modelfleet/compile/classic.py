"""scikit-learn, XGBoost and LightGBM models -> ONNX with the maintained converters (skl2onnx,
onnxmltools), checked by the accuracy gate against the source library's own predictions.

    source                             read with                     converted by
    XGBoost model (.json / .ubj)       xgboost's load_model          onnxmltools.convert_xgboost
    LightGBM model (.txt)              lightgbm.Booster              onnxmltools.convert_lightgbm
    pickled estimator (.joblib / .pkl) a narrowed unpickler          skl2onnx (onnxmltools for
    (--trust-pickle only)              (unpickle.py)                 XGB* / LGBM* wrappers)

The model takes one FP32 input `input` [batch, features]; classifiers answer `label` INT64 [batch]
and `probabilities` FP32 [batch, classes] (no ZipMap), regressors `variable` FP32 [batch, 1].
Trees run in float32 in ONNX and in float64 in the libraries: a split threshold between the two
can flip a row, which is what the gate is there to measure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.compile import gate as gates
from modelfleet.compile.errors import CompileError, Unsupported
from modelfleet.compile.source import Source, SourceKind

INPUT = "input"
ROWS = 256  # generated gate rows
_SEED = 14
_ONNX_TYPES = {1: "FP32", 7: "INT64", 11: "FP64", 6: "INT32"}


@dataclass
class Converted:
    """The ONNX model and what the gate needs to run the source on the same rows."""

    model: Any  # onnx.ModelProto
    features: int
    classifier: bool
    reference: Callable[[np.ndarray], np.ndarray]  # rows -> probabilities [rows, classes] or [rows, 1]
    library: str  # e.g. "scikit-learn 1.9.1 (LogisticRegression)"

    @property
    def compared(self) -> str:
        """The output the gate compares with the reference."""
        return "probabilities" if self.classifier else "variable"


def convert(source: Source) -> Converted:
    """The source model read and converted; CompileError naming what failed."""
    if source.kind == SourceKind.XGBOOST:
        converted = _xgboost_file(source.path)
    elif source.kind == SourceKind.LIGHTGBM:
        converted = _lightgbm_file(source.path)
    else:
        converted = _estimator(_unpickle(source.path), source.path.name)
    _batch_dynamic(converted.model)
    return converted


def _batch_dynamic(model: Any) -> None:
    """The first axis of every input and output named `batch` (a converter may declare an output
    [1]: ONNX Runtime then warns on every larger batch)."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"


def gate_rows(calibration: Path | None, features: int) -> np.ndarray:
    """FP32 [rows, features]: array `input` of a calibration .npz, else standard-normal rows."""
    if calibration is None:
        return np.random.default_rng(_SEED).normal(size=(ROWS, features)).astype(np.float32)
    if calibration.suffix != ".npz" or not calibration.is_file():
        raise CompileError(f"calibration file {calibration}: give an .npz holding an array '{INPUT}'")
    with np.load(calibration, allow_pickle=False) as data:
        if INPUT not in data:
            raise CompileError(f"{calibration.name} has no array '{INPUT}' (it has {sorted(data.files)})")
        rows = np.asarray(data[INPUT], dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != features or len(rows) == 0:
        raise CompileError(
            f"{calibration.name}: '{INPUT}' must be [rows, {features}] (the model's features), "
            f"got {list(rows.shape)}"
        )
    return rows


def run_gate(
    converted: Converted, session: Any, rows: np.ndarray, thresholds: gates.Thresholds
) -> gates.GateResult:
    """The converted model against the source. A regressor's predictions are compared as one
    vector (a cosine of one-number rows says only their sign)."""
    expected = converted.reference(rows.astype(np.float64)).astype(np.float32)
    got = session.run([converted.compared], {INPUT: rows})[0]
    if converted.classifier:
        return gates.compare(expected, got, True, thresholds)
    result = gates.compare(expected.reshape(1, -1), np.asarray(got).reshape(1, -1), False, thresholds)
    result.samples = len(rows)
    return result


def signature(model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of the converted graph as config.yaml tensors, batch axis -1."""

    def tensors(values: Any) -> list[dict[str, Any]]:
        out = []
        for value in values:
            kind = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
            dtype = _ONNX_TYPES.get(kind.elem_type)
            if dtype is None:
                raise Unsupported(f"the converted model's '{value.name}' has ONNX type {kind.elem_type}")
            out.append({"name": value.name, "datatype": dtype, "shape": [-1, *dims[1:]]})
        return out

    return tensors(model.graph.input), tensors(model.graph.output)


def timed_runner(session: Any) -> Callable[[np.ndarray], float]:
    """Seconds one run of `rows` takes (for the profile)."""

    def run(rows: np.ndarray) -> float:
        start = time.perf_counter()
        session.run(None, {INPUT: rows})
        return time.perf_counter() - start

    return run


def _initial_types(features: int, onnxmltools: bool) -> list[tuple[str, Any]]:
    if onnxmltools:
        from onnxmltools.convert.common.data_types import FloatTensorType  # type: ignore[import-untyped]
    else:
        from skl2onnx.common.data_types import FloatTensorType  # type: ignore[import-untyped]
    return [(INPUT, FloatTensorType([None, features]))]


def _xgboost_file(path: Path) -> Converted:
    import xgboost

    objective = _xgboost_objective(path)
    classifier = objective.startswith(("binary:", "multi:"))
    model = xgboost.XGBClassifier() if classifier else xgboost.XGBRegressor()
    try:
        model.load_model(str(path))
    except Exception as exc:
        raise CompileError(f"xgboost cannot read {path.name}: {str(exc).strip()[:300]}") from None
    return _estimator(model, path.name)


def _xgboost_objective(path: Path) -> str:
    """The objective's name of a JSON model ('' for UBJSON, which the library reads itself)."""
    if path.suffix != ".json":
        return _ubj_objective(path)
    try:
        learner = json.loads(path.read_text(encoding="utf-8"))["learner"]
        return str(learner["objective"]["name"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CompileError(f"{path.name} is not an XGBoost JSON model (no learner.objective)") from None


def _ubj_objective(path: Path) -> str:
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except Exception as exc:
        raise CompileError(f"xgboost cannot read {path.name}: {str(exc).strip()[:300]}") from None
    return str(json.loads(booster.save_config())["learner"]["objective"]["name"])


def _lightgbm_file(path: Path) -> Converted:
    import lightgbm

    try:
        booster = lightgbm.Booster(model_file=str(path))
    except Exception as exc:
        raise CompileError(f"lightgbm cannot read {path.name}: {str(exc).strip()[:300]}") from None
    objective = str(booster.dump_model().get("objective", ""))
    classifier = objective.startswith(("binary", "multiclass"))
    if not classifier and not objective.startswith(("regression", "huber", "fair", "quantile", "mape")):
        raise Unsupported(
            f"{path.name}: LightGBM objective '{objective}' is not converted (classifiers and regressors are)"
        )
    features = booster.num_feature()

    def reference(rows: np.ndarray) -> np.ndarray:
        out = np.asarray(booster.predict(rows), dtype=np.float64)
        if out.ndim == 1 and classifier:  # binary: the probability of class 1
            return np.stack([1.0 - out, out], axis=1)
        return out.reshape(len(rows), -1)

    model = _run_converter(
        lambda: _onnxmltools().convert_lightgbm(
            booster, initial_types=_initial_types(features, True), zipmap=False
        ),
        path.name,
    )
    return Converted(
        model, features, classifier, reference, f"lightgbm {lightgbm.__version__} (Booster, {objective})"
    )


def _estimator(model: Any, name: str) -> Converted:
    """A scikit-learn estimator (or an XGBoost / LightGBM scikit-learn wrapper)."""
    kind = type(model)
    module = kind.__module__.partition(".")[0]
    features = getattr(model, "n_features_in_", None)
    if module not in ("sklearn", "xgboost", "lightgbm") and not hasattr(model, "predict"):
        raise Unsupported(f"{name} holds a {kind.__name__}, not a scikit-learn, XGBoost or LightGBM model")
    if not isinstance(features, int):
        raise CompileError(f"{name}: the {kind.__name__} is not fitted (it has no n_features_in_)")
    classifier = hasattr(model, "predict_proba") and hasattr(model, "classes_")

    def convert() -> Any:
        if module == "xgboost":
            return _onnxmltools().convert_xgboost(model, initial_types=_initial_types(features, True))
        if module == "lightgbm":
            return _onnxmltools().convert_lightgbm(
                model, initial_types=_initial_types(features, True), zipmap=False
            )
        import skl2onnx  # type: ignore[import-untyped]

        options = {id(model): {"zipmap": False}} if classifier else None
        return skl2onnx.to_onnx(model, initial_types=_initial_types(features, False), options=options)

    def reference(rows: np.ndarray) -> np.ndarray:
        out = model.predict_proba(rows) if classifier else model.predict(rows)
        return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)

    library = __import__(module)
    return Converted(
        _run_converter(convert, name), features, classifier, reference,
        f"{module} {library.__version__} ({kind.__name__})",
    )  # fmt: skip


def _run_converter(convert: Callable[[], Any], name: str) -> Any:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # converters warn about opsets and dtypes they handle
            return convert()
    except Exception as exc:
        raise Unsupported(
            f"the converter cannot handle {name}: {type(exc).__name__}: {str(exc).strip()[:300]}"
        ) from None


def _onnxmltools() -> Any:
    import onnxmltools  # type: ignore[import-untyped]

    return onnxmltools


def _unpickle(path: Path) -> Any:
    """A trusted pickle (the source check refused it otherwise), its globals narrowed (unpickle.py)."""
    from modelfleet.compile.unpickle import load

    return load(path)
