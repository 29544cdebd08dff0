"""scikit-learn, XGBoost and LightGBM sources: tiny models fitted here on random data, converted by
skl2onnx / onnxmltools, gated against the libraries' own predictions, written with their signature."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from modelfleet.cli import build_app
from modelfleet.compile.classic import ROWS
from modelfleet.compile.errors import CompileError, GateFailed, Unsupported
from modelfleet.compile.gate import Thresholds
from modelfleet.compile.pipeline import CompileRequest, compile_model
from modelfleet.compile.report import CompileReport
from modelfleet.repository.folder import FolderRepository

FEATURES = 6


def _data(classes: int = 3, rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2]
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return x, y


def _compile(source: Path, out: Path, **options: Any) -> CompileReport:
    request = CompileRequest(source=source, out=out, batch_sizes=(1, 32), profile_s=0.01, **options)
    return compile_model(request, log=lambda _line: None)


def _signature(repo: Path, name: str) -> list[tuple[str, str, list[int]]]:
    config = FolderRepository(repo).fetch(name).config
    return [(t.name, t.datatype, t.shape) for t in [*(config.inputs or []), *(config.outputs or [])]]


def test_a_pickled_scikit_learn_classifier(tmp_path: Path) -> None:
    import joblib  # type: ignore[import-untyped]
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _data()
    joblib.dump(GradientBoostingClassifier(n_estimators=10, max_depth=3).fit(x, y), tmp_path / "gb.joblib")
    with pytest.raises(
        CompileError, match="gb.joblib is a pickle, which runs code when loaded; pass --trust-pickle"
    ):
        _compile(tmp_path / "gb.joblib", tmp_path / "repo" / "gb")
    report = _compile(tmp_path / "gb.joblib", tmp_path / "repo" / "gb", trust_pickle=True)
    assert report.source_kind == "scikit-learn" and report.task == "classification"
    assert report.gate is not None and report.gate.passed and report.gate.samples == ROWS
    assert report.gate.top1_agreement is not None and report.gate.top1_agreement >= 0.99
    assert [c.batch_size for c in report.profile] == [1, 32] and report.profile[0].seq_len == 0
    assert _signature(tmp_path / "repo", "gb") == [
        ("input", "FP32", [-1, FEATURES]), ("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 3]),
    ]  # fmt: skip
    assert "GradientBoostingClassifier" in report.notes[0]


def test_a_scikit_learn_regressor_is_compared_as_one_vector(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    x, _ = _data()
    (tmp_path / "ridge.pkl").write_bytes(pickle.dumps(Ridge().fit(x, x[:, 0] * 3 + x[:, 1])))
    report = _compile(tmp_path / "ridge.pkl", tmp_path / "repo" / "ridge", trust_pickle=True)
    assert report.task == "regression" and report.gate is not None and report.gate.passed
    assert report.gate.samples == ROWS and report.gate.top1_agreement is None
    assert report.gate.max_abs_diff < 1e-4
    assert _signature(tmp_path / "repo", "ridge")[1] == ("variable", "FP32", [-1, 1])


def test_xgboost_json_and_ubjson_models(tmp_path: Path) -> None:
    import xgboost

    x, y = _data()
    xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(x, y).save_model(tmp_path / "clf.json")
    xgboost.XGBRegressor(n_estimators=8, max_depth=3).fit(x, x[:, 0]).save_model(tmp_path / "reg.ubj")
    clf = _compile(tmp_path / "clf.json", tmp_path / "repo" / "xclf")
    reg = _compile(tmp_path / "reg.ubj", tmp_path / "repo" / "xreg")
    assert clf.source_kind == "xgboost" and clf.task == "classification" and clf.gate and clf.gate.passed
    assert reg.task == "regression" and reg.gate is not None and reg.gate.passed
    assert _signature(tmp_path / "repo", "xclf")[2] == ("probabilities", "FP32", [-1, 3])
    (tmp_path / "other.json").write_text(json.dumps({"not": "xgboost"}))
    with pytest.raises(
        CompileError, match=r"other.json is not an XGBoost JSON model \(no learner.objective\)"
    ):
        _compile(tmp_path / "other.json", tmp_path / "repo" / "o")


def test_a_lightgbm_binary_classifier_and_the_gate_refusing(tmp_path: Path) -> None:
    import lightgbm

    x, y = _data(classes=2)
    model = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=7, verbose=-1).fit(x, y)
    model.booster_.save_model(str(tmp_path / "lgb.txt"))
    report = _compile(tmp_path / "lgb.txt", tmp_path / "repo" / "lgb")
    assert report.source_kind == "lightgbm" and report.gate is not None and report.gate.passed
    assert _signature(tmp_path / "repo", "lgb")[2] == ("probabilities", "FP32", [-1, 2])
    graph = onnx.load(str(tmp_path / "repo" / "lgb" / "1" / "model.onnx")).graph
    assert all(v.type.tensor_type.shape.dim[0].dim_param == "batch" for v in [*graph.input, *graph.output])
    rows = np.random.default_rng(5).normal(size=(40, FEATURES)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=rows)
    with pytest.raises(GateFailed, match="max abs difference .* > 0.0; nothing was written"):
        _compile(
            tmp_path / "lgb.txt", tmp_path / "repo" / "strict", calibration=tmp_path / "calib.npz",
            thresholds=Thresholds(max_abs_diff=0.0),
        )  # fmt: skip  # float32 trees against float64 ones: never bit-equal on 40 rows
    kept = json.loads((tmp_path / "repo" / ".strict.compile-rejected.json").read_text())
    assert kept["status"] == "rejected" and kept["gate"]["samples"] == 40
    assert not (tmp_path / "repo" / "strict").exists()
    np.savez(tmp_path / "wrong.npz", input=rows[:, :3])
    with pytest.raises(
        CompileError, match=r"'input' must be \[rows, 6\] \(the model's features\), got \[40, 3\]"
    ):
        _compile(tmp_path / "lgb.txt", tmp_path / "repo" / "w", calibration=tmp_path / "wrong.npz")


def test_what_classic_models_cannot_be(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _data()
    (tmp_path / "lr.pkl").write_bytes(pickle.dumps(LogisticRegression().fit(x, y)))
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    (tmp_path / "unfitted.pkl").write_bytes(pickle.dumps(LogisticRegression()))

    def cli(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(build_app(), ["compile", *args, "--out", str(tmp_path / "repo" / "m")])
        return result.exit_code, result.output

    code, output = cli(str(tmp_path / "lr.pkl"), "--trust-pickle", "--precision", "int8")
    assert code == 2 and "a scikit-learn model compiles to fp32 ONNX for target cpu" in output
    code, output = cli(str(tmp_path / "lr.pkl"), "--trust-pickle", "--target", "cuda")
    assert code == 2 and "not fp32 onnx for cuda" in output
    code, output = cli(str(tmp_path / "dict.pkl"), "--trust-pickle")
    assert code == 2 and "dict.pkl holds a dict, not a scikit-learn, XGBoost or LightGBM model" in output
    code, output = cli(str(tmp_path / "unfitted.pkl"), "--trust-pickle")
    assert code == 1 and "the LogisticRegression is not fitted" in output
    code, output = cli(str(tmp_path / "lr.pkl"))
    assert code == 1 and "--trust-pickle" in output
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
    with pytest.raises(Unsupported):
        _compile(tmp_path / "lr.pkl", tmp_path / "repo" / "m", trust_pickle=True, static_int8=True)
