"""The house's layers, read from the source: no import circle, and each layer imports only below.

The graph is built with ``ast`` from every module of our six packages, counting every
``import`` / ``from ... import`` statement wherever it stands: at module level, inside a
function (a function-local import that closes a loop is still a circle, only a hidden one),
under ``if TYPE_CHECKING`` or in a ``try``. Relative imports are resolved against the module's
package. ``from a.b import c`` is an edge to the module ``a.b.c`` when that is a module, else to
``a.b``. A package's ``__init__`` that Python runs on the way to a submodule is not an edge of its
own (our ``__init__`` files are read like any other module, so what they import is counted).

The layers, bottom up (``docs/architecture.md``, "Layers"):

- ``core``: the vocabulary (requests, batches, step results, protocols, ``advance``); imports
  nothing of ours.
- ``policies`` and ``hwmodels``: schedulers and allocators, the hardware model; each imports only
  ``core`` (and itself). They never see each other.
- ``sim``: the engine, workloads, the cluster, tools; imports the layers below, never
  ``realexec`` (torch) or ``dashboard`` (streamlit), except the CLI entry modules named in
  ``SIM_ENTRY_POINTS``.
- ``realexec`` and ``dashboard``: the GPU executor and the app, on top; ``dashboard`` never
  imports ``realexec``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "policies", "hwmodels", "sim", "realexec", "dashboard")

# What each package may import besides itself.
ALLOWED = {
    "core": set(),
    "policies": {"core"},
    "hwmodels": {"core"},
    "sim": {"core", "policies", "hwmodels"},
    "realexec": {"core", "policies", "hwmodels", "sim"},
    "dashboard": {"core", "policies", "hwmodels", "sim"},
}

# The `servesim` command lives in sim/ (its console script, `sim.cli:main`, is part of the
# contract) and composes every package: its sub-commands `calibrate`, `validate`, `tp-check` run
# realexec and `dashboard` starts the app. These modules are the top of the house although they
# sit in sim/; nothing else in sim/ may import them (checked below), so the engine never reaches
# torch or streamlit through them.
SIM_ENTRY_POINTS: dict[str, set[str]] = {"sim.cli": {"realexec"}}


def module_names() -> dict[str, Path]:
    """Every module of our packages, dotted name to file."""
    names = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement reaches (submodules of ``from x import y`` too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" if base else alias.name for alias in node.names] + [base]


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, anywhere in its source."""
    modules = module_names()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = _imported(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                base = names.pop()  # `from base import x`: x when it is a module, else base
                edges |= {n if n in modules else _resolve(base, modules) for n in names}
            else:
                edges |= {_resolve(n, modules) for n in names}
        edges.discard(None)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that goes up (or sideways) the layers, as 'importer -> imported'."""
    bad = []
    for module, targets in sorted(graph.items()):
        package = module.split(".")[0]
        allowed = ALLOWED[package] | {package} | SIM_ENTRY_POINTS.get(module, set())
        bad += [f"{module} -> {t}" for t in sorted(targets) if t.split(".")[0] not in allowed]
    return bad


def test_graph_sees_every_package_and_local_imports():
    """The reader finds function-local and relative imports (a graph of nothing passes anything)."""
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    assert "core" in graph["policies.base"]
    assert "hwmodels" in graph["sim.assembly"]
    source = "def f():\n    from . import b\n    from .c import d\n    import a.e\n"
    tree = ast.parse(source)
    found = [n for node in ast.walk(tree) for n in _imported(node, "a.x", False)]
    assert found == ["a.b", "a", "a.c.d", "a.c", "a.e"]


def test_find_cycle_prints_the_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_layers_import_only_below():
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_sim_entry_points_are_imported_by_nothing_else_in_sim():
    graph = import_graph()
    users = [f"{m} -> {t}" for m, targets in graph.items() if m.startswith("sim.")
             for t in targets if t in SIM_ENTRY_POINTS and m not in SIM_ENTRY_POINTS]
    assert not users, "the engine reaches the CLI's entry modules:\n" + "\n".join(users)
