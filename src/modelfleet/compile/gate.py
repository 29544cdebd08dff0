"""The accuracy gate: the source model and the compiled one on the same inputs, compared.

Recorded: the largest absolute difference, the cosine between each pair of output rows (mean and
minimum over the samples), and for classifiers the share of rows whose top-1 class agrees. The
gate refuses when the mean cosine or the agreement falls under its threshold (or the difference
goes over one, when set); NaN anywhere fails it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from modelfleet.compile.samples import Batch

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]
"""Runs one batch of feeds; returns the model's output [rows, width]."""


@dataclass(frozen=True)
class Thresholds:
    min_cosine: float = 0.99
    min_agreement: float = 0.99
    max_abs_diff: float | None = None


@dataclass
class GateResult:
    samples: int
    max_abs_diff: float
    cosine_mean: float
    cosine_min: float
    top1_agreement: float | None  # classifiers only
    thresholds: Thresholds
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


def run_gate(
    source: Runner, compiled: Runner, batches: Sequence[Batch], classifier: bool, thresholds: Thresholds
) -> GateResult:
    expected = np.concatenate([_rows(source(b.feeds)) for b in batches])
    got = np.concatenate([_rows(compiled(b.feeds)) for b in batches])
    return compare(expected, got, classifier, thresholds)


def compare(expected: np.ndarray, got: np.ndarray, classifier: bool, thresholds: Thresholds) -> GateResult:
    if expected.shape != got.shape:
        return GateResult(
            len(expected), math.inf, 0.0, 0.0, None, thresholds,
            [f"output shape {list(got.shape)} differs from the source's {list(expected.shape)}"],
        )  # fmt: skip
    a, b = expected.astype(np.float64), got.astype(np.float64)
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0)
    cosines = np.where(norms > 0, cosines, np.where(np.abs(a - b).max(axis=1) == 0, 1.0, 0.0))
    agreement = float((a.argmax(axis=1) == b.argmax(axis=1)).mean()) if classifier else None
    result = GateResult(len(a), diff, float(cosines.mean()), float(cosines.min()), agreement, thresholds)
    if not math.isfinite(diff) or not math.isfinite(result.cosine_mean):
        result.failures.append("the compiled model produced NaN or infinite values")
    elif result.cosine_mean < thresholds.min_cosine:
        result.failures.append(f"cosine {result.cosine_mean:.4f} < {thresholds.min_cosine}")
    if agreement is not None and agreement < thresholds.min_agreement:
        result.failures.append(f"top-1 agreement {agreement:.2%} < {thresholds.min_agreement:.2%}")
    if thresholds.max_abs_diff is not None and not diff <= thresholds.max_abs_diff:
        result.failures.append(f"max abs difference {diff:.3g} > {thresholds.max_abs_diff}")
    return result


def _rows(output: np.ndarray) -> np.ndarray:
    array = np.asarray(output, dtype=np.float32)
    return array.reshape(len(array), -1)
