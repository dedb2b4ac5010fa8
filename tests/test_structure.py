"""Module boundaries: no import cycle among the modules of posecore/, service/ and model_export/, counting the
imports inside functions (a late import that dodges a cycle is still a cycle); none among the top-level packages
either, service/ and model_export/ never import each other (both import posecore/, which imports neither) and
the client imports none of them; the pure layers stay free of web and thread machinery."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("posecore", "service", "model_export")
CLIENT = ROOT / "client" / "pose_client"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module `path` imports, at any depth of the file (functions included)."""
    found: set[str] = set()
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != own:
                found.add(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    # A package's __init__ runs before any of its modules, an edge every module has and no cycle: only what
    # each file itself imports counts.
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_pure_layers_import_no_web_or_thread_machinery():
    modules = project_modules()
    for pure in ("posecore.codec", "posecore.geometry", "posecore.heatmaps", "posecore.boxes", "posecore.imaging"):
        source = modules[pure].read_text()
        tree = ast.parse(source)
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"fastapi", "starlette", "threading", "asyncio", "concurrent"}, pure
        assert "service.batching" not in imports_of(modules[pure], modules), pure


def package_graph() -> dict[str, set[str]]:
    """Top-level package -> the project packages its modules import (any depth, functions included)."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for module, imported in import_graph().items():
        top = module.partition(".")[0]
        graph[top] |= {name.partition(".")[0] for name in imported} - {top}
    return graph


def test_the_top_level_packages_form_no_cycle_and_serving_and_training_stay_apart():
    graph = package_graph()
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])
    assert "model_export" not in graph["service"], "service imports model_export: the serving image needs no torch"
    assert "service" not in graph["model_export"], "model_export imports service"
    assert graph["posecore"] == set(), "posecore imports " + ", ".join(sorted(graph["posecore"]))


def test_the_client_imports_nothing_of_the_service():
    for path in CLIENT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and not node.level}
        assert not imported & {*PACKAGES, "numpy", "pydantic", "fastapi"}, path
