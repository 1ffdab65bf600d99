"""The shape of the code, checked: imports point one way and never go round.

docs/design.md draws the rooms: ``web -> persistence -> actors`` for imports.
These tests read every module's imports (top-level, function-level and
``TYPE_CHECKING``-only alike) and fail on an import cycle or an arrow that
points the wrong way, so the shape cannot erode one convenient import at a
time.  They also check the runtime's public face (``from runyard.actors import ...``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from runyard import actors

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "persistence", "web")
FORBIDDEN = {
    "actors": {"web", "persistence"},
    "persistence": {"web"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, resolved to the longest known module."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_not_even_type_only() -> None:
    assert _cycles(_graph()) == []


def test_imports_point_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set())
    ]
    assert wrong == []


def test_the_runtime_is_not_imported_through_its_own_facade() -> None:
    # Inside the package, `from runyard.actors import X` would tie every module to all the others.
    inside = [
        m for m, targets in _graph().items() if m.startswith("actors.") and "actors" in targets
    ]
    assert inside == []


def test_pykka_private_names_stay_in_the_asyncio_actor() -> None:
    users = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if ("pykka._" in text or "_ActorStop" in text) and name != "runyard.actors.asyncio_actor":
            users.append(name)
    assert users == []


@pytest.mark.parametrize("name", actors.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(actors, name)
    assert value is not None
    assert name in dir(actors)


def test_the_facade_is_lazy_and_refuses_unknown_names() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = actors.Nope  # type: ignore[attr-defined]
    # The run-code child imports runyard.actors.code.child and must not pay for the server.
    child = importlib.import_module("runyard.actors.code.child")
    assert child.__name__ == "runyard.actors.code.child"
