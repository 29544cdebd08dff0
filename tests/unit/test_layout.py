"""The core's shape (issue 17): modules of at most 450 lines, classes of at most 300, and no import
cycle through the engine, the workers, the repository or the data plane (module-level imports,
TYPE_CHECKING ones included; imports inside functions are lazy and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import modelfleet

SRC = Path(modelfleet.__file__).parent
CORE = ("engine", "workers", "repository", "server/dataplane.py", "server/app.py", "server/metrics.py")
MAX_MODULE_LINES, MAX_CLASS_LINES = 450, 300


def core_files() -> list[Path]:
    files: list[Path] = []
    for part in CORE:
        path = SRC / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


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


def test_core_modules_and_classes_stay_small() -> None:
    too_big = []
    for path in core_files():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_big.append(f"{path.relative_to(SRC)}: class {node.name} {lines} lines")
    assert too_big == []


def test_no_import_cycle_through_the_core() -> None:
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
    core = {module_name(p) for p in core_files()}
    cycles = []
    for start in sorted(core):  # a path from the module back to itself
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
