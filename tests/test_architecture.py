"""The import graph of the project's modules: no cycles, and no arrow pointing up the layers.

Layers, bottom to top: ``utils`` -> ``models`` -> ``extensions`` -> ``engine`` -> entry scripts (``train.py``,
``val.py``, ``detect.py``, ``track.py``, ``export.py``, ``hubconf.py``, ``extensions/pretrain.py``,
``classify/train.py``, ``classify/val.py``, ``classify/predict.py``). A module may import its own layer and the
layers below it. Every import statement counts, also inside functions, as does
``importlib.import_module("literal")``; only the ``if __name__ == "__main__":`` block of a module (its command line)
is entry-script code and exempt. Lazy re-exports through a module ``__getattr__`` that name modules by variable
are not seen here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {"tests", "benchmarks", "docs", "data"}
ENTRY_SCRIPTS = {"train", "val", "detect", "track", "export", "hubconf", "extensions.pretrain", "classify",
                 "classify.train", "classify.val", "classify.predict"}
LAYERS = {"utils": 0, "models": 1, "extensions": 2, "engine": 3}
ENTRY_LAYER = 4


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every importable project module (``package.module`` -> file), tests and benchmarks excluded."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        if rel[0] in SKIPPED_DIRS or any(part.startswith(".") for part in rel):
            continue
        modules[_module_name(path)] = path
    return modules


def layer(module: str) -> int:
    """The layer rank of a module (see the module docstring)."""
    if module in ENTRY_SCRIPTS:
        return ENTRY_LAYER
    return LAYERS.get(module.split(".")[0], ENTRY_LAYER)


def _is_main_guard(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                   for c in test.comparators))


def _imported_names(tree: ast.AST, module: str, is_package: bool,
                    known: frozenset[str] = frozenset()) -> list[tuple[str, int]]:
    """(dotted module name, line) for everything ``module`` imports.

    ``from a import b`` yields ``a.b`` when that is a module in ``known``, else ``a`` (``b`` is a name in ``a``).
    """
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """``module -> {imported project module: first line}`` over every project module."""
    modules = project_modules()
    known = frozenset(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line in _imported_names(tree, name, path.name == "__init__.py", known):
            if target in modules and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
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
            connect(v)
    return sorted(found)


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """``'a.py:12 a -> b'`` for every import of a module in a higher layer than the importer."""
    modules = project_modules()
    return sorted(f"{modules[a].relative_to(ROOT)}:{line} {a} -> {b}"
                  for a, edges in graph.items() for b, line in edges.items() if layer(b) > layer(a))


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_upward_imports(graph):
    found = upward_imports(graph)
    assert not found, "imports pointing up the layers (utils < models < extensions < engine < entry scripts):\n" + \
        "\n".join(found)


def test_the_checker_sees_function_level_imports_and_cycles():
    code = "import os\n\ndef f():\n    from models.yolo import Detect\n\nif __name__ == '__main__':\n    import train\n"
    names = [n for n, _ in _imported_names(ast.parse(code), "utils.example", False)]
    assert names == ["os", "models.yolo"]
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert layer("utils.data.loaders") < layer("models.yolo") < layer("extensions.yolov3") < layer("engine.trainer")
    assert layer("extensions.pretrain") == layer("train") == ENTRY_LAYER
    assert layer("classify.train") == layer("classify.val") == layer("classify.predict") == ENTRY_LAYER


def test_relative_imports_resolve():
    tree = ast.parse("from . import paths\nfrom ..files import x\nfrom utils import dist\n")
    known = frozenset({"utils.data.paths", "utils.dist"})
    names = [n for n, _ in _imported_names(tree, "utils.data.loaders", False, known)]
    assert names == ["utils.data.paths", "utils.files", "utils.dist"]
