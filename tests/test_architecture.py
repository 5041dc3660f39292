"""The import direction ``gateway → runtime → projections → aggregates`` and the
purity of ``aggregates/`` (no clocks, randomness or I/O), checked on the source."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["aggregates", "projections", "runtime", "gateway"]
RANK = {name: rank for rank, name in enumerate(LAYERS)}

BANNED_IN_AGGREGATES_MODULES = {
    "time",
    "random",
    "secrets",
    "uuid",
    "os",
    "io",
    "pathlib",
    "socket",
    "subprocess",
    "threading",
    "asyncio",
    "logging",
    "sqlite3",
    "shutil",
    "tempfile",
    "urllib",
    "http",
    "select",
    "signal",
}
BANNED_IN_AGGREGATES_CALLS = {
    "open",
    "print",
    "input",
    "now",
    "utcnow",
    "today",
    "uuid4",
}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Absolute module names imported by a module, with their line numbers."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def direction_violations(layer: str, source: str, where: str) -> list[str]:
    """Imports in ``source`` (a module of ``layer``) that break the rules."""
    problems = []
    for line, module in imported_modules(ast.parse(source)):
        top = module.split(".")[0]
        if top in RANK and RANK[top] > RANK[layer]:
            problems.append(f"{where}:{line} imports {module} against the direction")
        if (
            layer == "gateway"
            and top in RANK
            and top != "gateway"
            and module != "runtime"
        ):
            problems.append(
                f"{where}:{line} imports {module}; gateway uses the runtime facade only"
            )
        if layer == "aggregates" and top not in RANK:
            allowed = top in sys.stdlib_module_names or module == "eventsourcing.domain"
            if not allowed:
                problems.append(f"{where}:{line} imports {module} into the pure domain")
    return problems


def purity_violations(source: str, where: str) -> list[str]:
    """Clocks, randomness and I/O used in ``source``."""
    problems = []
    tree = ast.parse(source)
    for line, module in imported_modules(tree):
        if module.split(".")[0] in BANNED_IN_AGGREGATES_MODULES:
            problems.append(f"{where}:{line} imports {module}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else getattr(func, "id", "")
            )
            if name in BANNED_IN_AGGREGATES_CALLS:
                problems.append(f"{where}:{node.lineno} calls {name}()")
    return problems


def modules_of(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def test_every_layer_imports_only_downwards() -> None:
    problems = [
        problem
        for layer in LAYERS
        for path in modules_of(layer)
        for problem in direction_violations(
            layer, path.read_text(), str(path.relative_to(ROOT))
        )
    ]
    assert problems == []


def test_aggregates_use_no_clock_randomness_or_io() -> None:
    problems = [
        problem
        for path in modules_of("aggregates")
        for problem in purity_violations(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert problems == []


def test_the_direction_check_catches_an_upward_import() -> None:
    assert direction_violations("projections", "import runtime.actor\n", "x.py")
    assert direction_violations("aggregates", "from projections import views\n", "x.py")
    assert direction_violations(
        "gateway", "from runtime.actor import SessionActor\n", "x.py"
    )
    assert direction_violations("aggregates", "import orjson\n", "x.py")
    assert not direction_violations("gateway", "from runtime import Runtime\n", "x.py")


def test_the_purity_check_catches_clocks_randomness_and_io() -> None:
    assert purity_violations(
        "from datetime import datetime\nx = datetime.now()\n", "x.py"
    )
    assert purity_violations("import uuid\n", "x.py")
    assert purity_violations("import random\n", "x.py")
    assert purity_violations("data = open('f').read()\n", "x.py")
    assert not purity_violations("from datetime import datetime\n", "x.py")
