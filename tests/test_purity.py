"""The engine is pure: it imports nothing that does I/O, reads a clock or draws randomness."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ALLOWED_OUTSIDE = {
    "__future__",
    "bisect",
    "collections",
    "collections.abc",
    "dataclasses",
    "hashlib",
    "heapq",
    "re",
    "reprlib",  # bounded reprs of bad values in error messages: no I/O
    "typing",
    "datetime",
    "msgspec",
    "yaml",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "random", "urandom"}


def _module_file(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    return Path(spec.origin)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _closure(start: str) -> dict[str, ast.Module]:
    seen: dict[str, ast.Module] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        tree = ast.parse(_module_file(name).read_text())
        seen[name] = tree
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
                targets += [f"{node.module}.{a.name}" for a in node.names if node.module.startswith("tripwire")]
            for target in targets:
                if target.startswith("tripwire") and _is_module(target):
                    todo.append(target)
    return seen


def test_engine_imports_only_pure_modules() -> None:
    """STYLE: the engine and everything it imports does no I/O, reads no clock, draws no randomness."""
    modules = _closure("tripwire.engine")
    assert "tripwire.engine.core" in modules
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                outside = [a.name for a in node.names if not a.name.startswith("tripwire")]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("tripwire"):
                outside = [node.module]
            else:
                outside = []
            for module in outside:
                assert module in ALLOWED_OUTSIDE, f"{name} imports {module}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in CLOCK_CALLS, f"{name} calls .{node.func.attr}()"


def test_the_closure_reaches_the_rules_and_events() -> None:
    """The purity check covers the modules the engine runs, not only the package itself."""
    modules = _closure("tripwire.engine")
    assert {"tripwire.events", "tripwire.rules.where", "tripwire.timestamps"} <= set(modules)
