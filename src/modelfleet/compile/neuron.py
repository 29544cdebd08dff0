"""Neuron operator placement: which of the model's operators neuronx-cc compiles for the device and
which it cannot (those would fail the trace or run elsewhere), from `torch_neuronx.analyze`, recorded
in compile.json as `neuron_placement`. Where the SDK offers no analyze(), or it fails, the report
says so rather than inventing a figure.

analyze() answers a dict like {"support_percentage": "95.64%", "supported_operators": {"aten":
{"aten::linear": 12, ...}}, "unsupported_operators": [{"kind": "aten::erfinv", "failureAt":
"neuronx-cc", "call": "..."}]}; the fraction is read from the percentage, else from the counts.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelfleet.compile.onnx_steps import ignore_export_warnings


def placement(module: Any, example: dict[str, np.ndarray], input_names: Sequence[str]) -> dict[str, Any]:
    import torch
    import torch_neuronx

    analyze = getattr(torch_neuronx, "analyze", None)
    if analyze is None:
        return {"recorded": False, "reason": "this torch_neuronx has no analyze()"}
    args = tuple(torch.from_numpy(example[name]) for name in input_names)
    keywords = {"is_hf_transformers": True} if "is_hf_transformers" in _parameters(analyze) else {}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            ignore_export_warnings()  # analyze() traces the module, as the compile's trace does
            answer = analyze(module, args, **keywords)
    except Exception as exc:  # the trace goes on; only the figure is missing
        return {
            "recorded": False,
            "reason": f"torch_neuronx.analyze failed: {type(exc).__name__}: {str(exc)[:200]}",
        }
    return summarise(answer)


def summarise(answer: Any) -> dict[str, Any]:
    """The analyze() answer reduced to what the report keeps."""
    if not isinstance(answer, dict):
        return {"recorded": False, "reason": f"torch_neuronx.analyze answered a {type(answer).__name__}"}
    supported: dict[str, int] = {}
    for group in (answer.get("supported_operators") or {}).values():
        if isinstance(group, dict):
            supported.update({str(k): int(v) for k, v in group.items()})
    unsupported = [
        str(op.get("kind", "?")) if isinstance(op, dict) else str(op)
        for op in _flatten(answer.get("unsupported_operators") or [])
    ]
    count = sum(supported.values())
    fraction = _percentage(answer.get("support_percentage"))
    if fraction is None and count + len(unsupported):
        fraction = count / (count + len(unsupported))
    return {
        "recorded": fraction is not None,
        "fraction_on_device": None if fraction is None else round(fraction, 4),
        "supported_operators": count,
        "unsupported_operators": sorted(set(unsupported)),
        "by_operator": dict(sorted(supported.items())),
    }


def placement_line(found: dict[str, Any]) -> str:
    if not found.get("recorded"):
        return f"operators placed on Neuron: not recorded ({found.get('reason', 'no figure')})"
    missing = found["unsupported_operators"]
    return f"operators placed on Neuron: {found['fraction_on_device']:.2%}" + (
        f"; not supported: {', '.join(missing)}" if missing else ""
    )


def _percentage(value: Any) -> float | None:
    try:
        return float(str(value).strip().rstrip("%")) / 100 if value is not None else None
    except ValueError:
        return None


def _flatten(value: Any) -> list[Any]:
    """Unsupported operators come as a list, or as a dict of lists per namespace."""
    if isinstance(value, dict):
        return [op for group in value.values() for op in (group if isinstance(group, list) else [group])]
    return list(value)


def _parameters(function: Any) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()
