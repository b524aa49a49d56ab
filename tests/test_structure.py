"""The package's shape: layers that only call down, no import circle, a low house (at most 6
floors), MLflow and Optuna where they belong, and functions that fit on a screen.

A unit is a module, a sub-package counting as one (``fgdepth.engine``, ``fgdepth.app``); the
graph is read from every import statement, including those inside functions. The error family
(``fgdepth.errors``) is the ground the floors stand on, like the package itself: every layer
raises its errors, so it imports nothing and counts as no floor.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "fgdepth"
MAX_FLOORS = 6
MAX_FUNCTION_LINES = 60
# declarative argument parsers: one add_argument after another, read as a table
PARSERS = {("app/cli.py", "build_parser")}
MLFLOW_ALLOWED = ("fgdepth.tracking", "fgdepth.serving", "fgdepth.app.report")
OPTUNA_ALLOWED = ("fgdepth.tuning",)
CORE = {"fgdepth.config", "fgdepth.data", "fgdepth.engine", "fgdepth.losses", "fgdepth.metrics"}
ADAPTERS = {"fgdepth.tracking", "fgdepth.tuning", "fgdepth.serving", "fgdepth.predict"}
GROUND = {"fgdepth.errors"}  # imported by every layer, importing nothing


def _module(path: Path) -> str:
    parts = path.with_suffix("").relative_to(ROOT.parent).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """``fgdepth.engine.fit`` -> ``fgdepth.engine``; a top-level module is its own unit."""
    parts = module.split(".")
    if len(parts) >= 2 and (ROOT / parts[1]).is_dir():
        return ".".join(parts[:2])
    if len(parts) >= 2 and (ROOT / f"{parts[1]}.py").exists():
        return ".".join(parts[:2])
    return "fgdepth" if parts == ["fgdepth"] else ""


def _imported(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names (absolute, resolved)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@cache
def _files() -> dict[str, set[str]]:
    return {_module(p): _imported(p) for p in sorted(ROOT.rglob("*.py"))}


@cache
def _graph() -> dict[str, frozenset[str]]:
    graph: dict[str, set[str]] = {}
    for module, names in _files().items():
        unit = _unit(module)
        deps = graph.setdefault(unit, set())
        deps.update(
            u
            for n in names
            if n.startswith("fgdepth.") and (u := _unit(n)) not in ("", unit, *GROUND)
        )
    return {u: frozenset(d) for u, d in graph.items()}


def _cycles() -> list[list[str]]:
    graph, cycles, done = _graph(), [], set()

    def visit(unit: str, path: list[str]) -> None:
        if unit in path:
            cycles.append(path[path.index(unit) :] + [unit])
            return
        if unit in done:
            return
        for dep in sorted(graph.get(unit, ())):
            visit(dep, [*path, unit])
        done.add(unit)

    for unit in sorted(graph):
        visit(unit, [])
    return cycles


def _longest_chain() -> list[str]:
    graph = _graph()

    @cache
    def chain(unit: str, seen: frozenset = frozenset()) -> tuple[str, ...]:
        below = [chain(d, seen | {unit}) for d in graph.get(unit, ()) if d not in seen]
        return (unit, *max(below, key=len, default=()))

    return list(max((chain(u) for u in graph), key=len))


def test_no_import_circle():
    assert _cycles() == []


def test_the_ground_imports_nothing():
    """The error family may be imported by every layer because it imports nothing at all."""
    for unit in GROUND:
        names = _files()[unit]
        assert names <= {"__future__", "__future__.annotations"}, sorted(names)


def test_the_house_is_at_most_six_floors():
    chain = _longest_chain()
    assert len(chain) <= MAX_FLOORS, " -> ".join(chain)


def test_the_adapters_do_not_import_each_other_or_the_app():
    graph = _graph()
    for adapter in ADAPTERS:
        wrong = graph[adapter] & (ADAPTERS | {"fgdepth.app"})
        assert not wrong, f"{adapter} imports {sorted(wrong)}"
    for unit in CORE | {"fgdepth.models"}:
        assert not graph[unit] & (ADAPTERS | {"fgdepth.app"}), unit


def _importers(library: str) -> set[str]:
    return {
        module
        for module, names in _files().items()
        if any(n == library or n.startswith(f"{library}.") for n in names)
    }


def test_mlflow_only_in_tracking_serving_and_the_report():
    outside = {m for m in _importers("mlflow") if not m.startswith(MLFLOW_ALLOWED)}
    assert outside == set()


def test_optuna_only_in_tuning():
    outside = {m for m in _importers("optuna") if not m.startswith(OPTUNA_ALLOWED)}
    assert outside == set()


def test_importing_the_lower_layers_loads_neither_mlflow_nor_optuna():
    code = (
        "import sys, fgdepth.engine, fgdepth.data, fgdepth.models, fgdepth.losses, "
        "fgdepth.metrics, fgdepth.predict, fgdepth.app.cli; "
        "print(sorted(m for m in ('mlflow', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, fgdepth.tracking; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _long_functions() -> list[tuple[str, str, int]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and (rel, node.name) not in PARSERS:
                    out.append((rel, node.name, lines))
    return out


def test_no_function_is_over_sixty_lines():
    assert _long_functions() == []


def test_the_named_parsers_exist():
    """The exceptions name real functions (a renamed parser must not hide a long function)."""
    for rel, name in PARSERS:
        tree = ast.parse((ROOT / rel).read_text())
        assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
