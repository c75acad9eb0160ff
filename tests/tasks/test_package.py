"""The shape of ``tasks/``, read from its source with ``ast``: imports point one way, none hides
inside a function, and one module maps a failure to a job outcome."""

from __future__ import annotations

import ast
from pathlib import Path

import tasks

SOURCES = sorted(Path(tasks.__file__).parent.glob("*.py"))
OURS = ("tasks", "core", "api", "earshot")


def imported(node: ast.AST) -> list[str]:
    """The module names an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    return []


def late_imports(tree: ast.Module) -> list[str]:
    """Modules imported inside a function body."""
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                found += imported(node)
    return found


def graph() -> dict[str, set[str]]:
    """``tasks.x`` → the ``tasks.*`` modules it imports anywhere in its source."""
    edges: dict[str, set[str]] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {name for node in ast.walk(tree) for name in imported(node)}
        edges[f"tasks.{path.stem}"] = {t for t in targets if t.startswith("tasks.")}
    return edges


def test_the_task_modules_import_each_other_without_a_circle() -> None:
    edges = graph()
    assert "tasks.analyze" in edges and "tasks.outcomes" in edges
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import circle: " + " -> ".join([*path, module])
        if module in done:
            return
        for target in sorted(edges.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def test_no_module_of_ours_is_imported_inside_a_function() -> None:
    # Only the heavy analysis stack (librosa, numpy) is imported late, when a task runs.
    late = {
        f"{path.name}: {name}"
        for path in SOURCES
        for name in late_imports(ast.parse(path.read_text()))
        if name.split(".")[0] in OURS
    }
    assert late == set()


def test_only_tasks_outcomes_fails_a_job() -> None:
    callers = {
        path.name
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "mark_failed"
    }
    assert callers == {"outcomes.py"}
