"""The tools import each other's public API only (issue 17 item 6): deploy reads the planner through
`modelfleet.planner`, the planner reads profiles through `modelfleet.tune`, and those two names need
neither OR-Tools nor matplotlib."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import modelfleet.planner
import modelfleet.tune

SRC = Path(__file__).resolve().parents[3] / "src" / "modelfleet"


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, module) for every `from X import` / `import X` in the package's modules."""
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize(
    ("package", "other"), [("deploy", "planner"), ("planner", "tune"), ("deploy", "tune")]
)
def test_a_tool_imports_another_only_through_its_public_api(package: str, other: str) -> None:
    inside = [(f, m) for f, m in _imports(package) if m.startswith(f"modelfleet.{other}.")]
    assert not inside, f"{package} reaches into {other}'s modules: {inside}"


@pytest.mark.parametrize("package", [modelfleet.planner, modelfleet.tune])
def test_the_public_names_exist_and_need_no_solver(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert names and all(hasattr(package, name) for name in names)
    heavy = {"ortools", "matplotlib"}
    init = Path(package.__file__).read_text(encoding="utf-8")  # type: ignore[attr-defined]
    tree = ast.parse(init)
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    for module in modules:  # each module the package's __init__ imports, and what those import at the top
        path = SRC.parent / (module.replace(".", "/") + ".py")
        top = ast.parse(path.read_text(encoding="utf-8")).body
        imported = [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        assert not {m.split(".")[0] for m in imported} & heavy, f"{module} imports a solver at the top"
