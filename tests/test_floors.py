"""The house's floors: corpus at the bottom, then markov, reranker, server; imports only point down a floor.

Every import statement of the four packages is read with `ast`, function-level ones included (a lazy import is an
arrow too), so an upward arrow or an import circle fails here before it reaches main. A fresh interpreter checks
the same at run time for the modules whose lightness matters.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"corpus": 0, "markov": 1, "reranker": 2, "server": 3}
# Modules that must not reach a floor their own package may: the turn runs whatever it is handed.
KEPT_APART = {"server.engine": {"markov", "reranker"}, "server.scheduler": {"markov", "reranker"},
              "server.budget": {"markov", "reranker"}}


def module_name(path: Path) -> str:
    """`reranker/editor.py` -> `reranker.editor`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Every module of the four packages, by dotted name."""
    return {module_name(p): p for package in FLOORS for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file (resolved to the most specific known module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..a import b
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def floor(module: str) -> int:
    """The floor a module lives on."""
    return FLOORS[module.split(".")[0]]


def test_the_graph_sees_the_imports_it_must():
    graph = import_graph()
    assert "corpus.modeldir" in graph["markov.chain"]  # a module-level `from corpus import modeldir`
    assert "markov.personas" in graph["server.models"]  # a function-level import counts
    assert "reranker.loading" in graph["server.models"] or "reranker" in graph["server.models"]
    assert len(graph) > 60


def test_no_import_points_up_a_floor():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets if floor(b) > floor(a))
    assert upward == [], "imports that point up a floor (corpus < markov < reranker < server):\n" + "\n".join(upward)


def test_the_turn_pipeline_imports_no_model_package():
    graph = import_graph()
    for module, forbidden in KEPT_APART.items():
        reached = {target for target in graph[module] if target.split(".")[0] in forbidden}
        assert not reached, f"{module} imports {sorted(reached)}; models reach the engine through server.models"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_there_are_no_import_circles():
    assert find_cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("modules", "absent"), [
    (["corpus.clean", "corpus.dump", "corpus.text", "corpus.modeldir", "corpus.__main__"], ["markov", "reranker", "server"]),
    (["markov", "markov.personas", "markov.__main__"], ["reranker", "server"]),
    (["reranker.pairs", "reranker.windows"], ["server", "torch"]),
    (["reranker.loading", "reranker.recipes", "reranker.__main__"], ["server"]),
    (["server.engine"], ["markov", "reranker"]),
])
def test_a_fresh_interpreter_loads_no_floor_above(modules, absent):
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted({{k.split('.')[0] for k in sys.modules}} & {set(absent)!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing {modules} loaded {out.stdout.strip()}"
