"""Trusted scikit-learn pickles are read with their globals narrowed: what an estimator needs
loads, a pickle calling anything else is refused by name before it runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelfleet.compile.errors import CompileError
from modelfleet.compile.unpickle import allowed, load, may_import


class _Calls:
    """Pickles as a call of `function(*args)`, as a crafted pickle would."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def test_calls_outside_an_estimators_needs_are_refused_before_they_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = {
        "system.pkl": _Calls(os.system, f"touch {marker}"),
        "memmap.pkl": _Calls(np.memmap, str(marker), np.uint8, "w+", 0, (4,)),  # a numpy class that writes
        "eval.joblib": _Calls(eval, "1 + 1"),
        "nested.pkl": {"model": [_Calls(os.system, f"touch {marker}")]},
    }
    for name, payload in crafted.items():
        (tmp_path / name).write_bytes(pickle.dumps(payload, protocol=5))
        with pytest.raises(
            CompileError, match=rf"{name} calls \S+, which a scikit-learn, XGBoost or LightGBM"
        ):
            load(tmp_path / name)
    assert not marker.exists()


def test_what_estimators_need_loads(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.integers(0, 2, 60)
    model = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=rng.integers(9))
    )
    model.fit(x, y)
    for protocol in (2, 4, 5):
        (tmp_path / f"p{protocol}.pkl").write_bytes(pickle.dumps(model, protocol=protocol))
        loaded = load(tmp_path / f"p{protocol}.pkl")
        assert (loaded.predict_proba(x) == model.predict_proba(x)).all()


def test_compressed_joblib_files_are_not_read(tmp_path: Path) -> None:
    import joblib  # type: ignore[import-untyped]

    joblib.dump({"a": np.zeros(3)}, tmp_path / "z.joblib", compress=3)
    with pytest.raises(CompileError, match="not an uncompressed pickle .* joblib.dump without compress"):
        load(tmp_path / "z.joblib")


def test_the_rules() -> None:
    import sklearn.utils

    assert may_import("sklearn.pipeline", "Pipeline") and may_import("numpy._core.multiarray", "_reconstruct")
    assert not may_import("os", "system") and not may_import("numpy", "memmap")
    assert not may_import("sklearn.utils._testing", "TempMemmap") and not may_import("builtins", "eval")
    assert may_import("sklearn.utils", "resample")  # imported, then refused: a function
    assert not allowed("sklearn.utils", "resample", sklearn.utils.resample)
    assert allowed("sklearn.utils", "Bunch", sklearn.utils.Bunch)
