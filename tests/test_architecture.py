"""The shape of the code, checked on its syntax trees: subpackages that import only downwards, data that knows
nothing of the model, short functions and modules, few modules at the top."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clbench"
# Each subpackage may import those before it, never one after it (the path a run's data takes, docs/architecture.md).
LAYERS = ("core", "data", "synth", "model", "config", "strategy", "scenario", "training", "evaluation", "report",
          "run", "engines")  # fmt: skip
TOP = ("__init__", "__main__", "cli", "commands", "config")  # the top-level modules: the public face and the CLI
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def _sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / "strategies").glob("*.py"), *(ROOT / "scenarios").glob("*.py")])


def _unit(path: Path) -> str:
    """The subpackage (or top-level module) a file belongs to."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    """The clbench units a module imports, at its top or inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "clbench" else [f"clbench.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "clbench" and len(parts) > 1:
                found.add(parts[1])
    return found


def _layered() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if _unit(p) in LAYERS]


def test_subpackages_import_only_those_before_them():
    wrong = []
    for path in _layered():
        unit = _unit(path)
        for target in _imports(path) & set(LAYERS):
            if LAYERS.index(target) > LAYERS.index(unit):
                wrong.append(f"{path.relative_to(ROOT)} ({unit}) imports {target}")
    assert wrong == []


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {unit: set() for unit in LAYERS}
    for path in _layered():
        graph[_unit(path)] |= (_imports(path) & set(LAYERS)) - {_unit(path)}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert [unit for unit in LAYERS if reaches(unit, unit, set())] == []


def test_data_knows_nothing_of_the_model():
    for path in (PACKAGE / "data").rglob("*.py"):
        assert "model" not in _imports(path), path


def test_few_modules_at_the_top():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert set(top) <= set(TOP) and len(top) <= 6, top


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_and_modules_are_short(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_a_built_in_strategy_is_one_file(tmp_path):
    """A file dropped into a copy of the package's strategies is listed by `python -m clbench strategies`, with no
    other file edited and nothing reinstalled."""
    copy = tmp_path / "site"
    skip = shutil.ignore_patterns("__pycache__", "*.pt", "*.png")
    shutil.copytree(PACKAGE, copy / "clbench", ignore=skip)
    for folder in ("strategies", "scenarios"):
        shutil.copytree(ROOT / folder, copy / "clbench" / folder, ignore=skip)
    (copy / "clbench" / "strategies" / "anchored.py").write_text(
        "from clbench import Strategy, register\n\n\n"
        '@register("anchored")\n'
        "class Anchored(Strategy):\n"
        '    """Fine-tuning with a pull towards the first experience\'s weights."""\n\n'
        "    strength: float = 0.5\n"
    )
    listed = subprocess.run(
        [sys.executable, "-m", "clbench", "strategies"],
        cwd=copy,
        env=os.environ | {"PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "[clbench.strategies.anchored:Anchored]" in listed.stdout
    assert "defaults: strength=0.5" in listed.stdout
    assert "[clbench.strategies.ewc:EWC]" in listed.stdout  # the others are still found
