from __future__ import annotations

import numpy as np

from modelfleet.compile.gate import Thresholds, compare


def test_identical_outputs_pass() -> None:
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    result = compare(a, a.copy(), classifier=True, thresholds=Thresholds())
    assert result.passed
    assert (result.max_abs_diff, result.cosine_mean, result.cosine_min, result.top1_agreement) == (0, 1, 1, 1)


def test_each_threshold_refuses_with_its_number() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], np.float32)
    b = np.array([[1.0, 0.1], [0.1, 1.0], [1.0, 1.0], [1.0, 2.0]], np.float32)
    result = compare(a, b, classifier=True, thresholds=Thresholds(min_cosine=0.99, max_abs_diff=0.5))
    assert not result.passed
    assert result.top1_agreement == 0.75
    assert any(f.startswith("cosine 0.9") and f.endswith("< 0.99") for f in result.failures)
    assert "top-1 agreement 75.00% < 99.00%" in result.failures
    assert "max abs difference 1 > 0.5" in result.failures
    embedding = compare(a, b, classifier=False, thresholds=Thresholds(min_cosine=0.5))
    assert embedding.passed and embedding.top1_agreement is None


def test_nan_and_shape_changes_fail() -> None:
    a = np.ones((2, 3), np.float32)
    b = a.copy()
    b[0, 0] = np.nan
    assert compare(a, b, False, Thresholds()).failures == [
        "the compiled model produced NaN or infinite values"
    ]
    assert "differs from the source's [2, 3]" in compare(a, np.ones((2, 4)), False, Thresholds()).failures[0]
