"""The code's shape (issue 17): modules of at most 450 lines, classes of at most 300 (generated
protobuf code aside), and no import cycle between modules (module-level imports, TYPE_CHECKING ones
included; imports inside functions are lazy and do not count); the settings package is a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

import modelfleet

SRC = Path(modelfleet.__file__).parent
MAX_MODULE_LINES, MAX_CLASS_LINES = 450, 300


def source_files() -> list[Path]:
    """Every module of the package but the generated protobuf code."""
    return [p for p in sorted(SRC.rglob("*.py")) if not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    found: set[str] = set()

    def resolve(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    resolve(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    resolve(full if full in known else node.module)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def test_modules_and_classes_stay_small() -> None:
    too_big = []
    for path in source_files():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_big.append(f"{path.relative_to(SRC)}: class {node.name} {lines} lines")
    assert too_big == []


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in SRC.rglob("*.py")}
    known = set(paths)
    graph = {
        name: {
            d
            for d in imports(ast.parse(path.read_text()), known)
            if d != name and not d.startswith(name + ".")
        }
        for name, path in paths.items()
    }
    return graph


def test_no_import_cycle() -> None:
    graph = import_graph()
    cycles = []
    for start in sorted(graph):  # a path from the module back to itself
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    cycles.append(" -> ".join([*path, start]))
                    stack.clear()
                    break
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))
    assert cycles == []


def test_the_settings_are_a_leaf() -> None:
    """config/ imports nothing of modelfleet but itself: every part may read the settings."""
    graph = import_graph()
    outside = {
        f"{name} -> {dep}"
        for name, deps in graph.items()
        if name == "modelfleet.config" or name.startswith("modelfleet.config.")
        for dep in deps
        if dep != "modelfleet.config" and not dep.startswith("modelfleet.config.") and dep != "modelfleet"
    }
    assert outside == set()
