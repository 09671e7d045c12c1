"""Every Python example in the README runs exactly as written: saved to a file, used through the CLI as the README
says (`--strategy file.py:Class`, `--scenario file.py:Class`), on the tiny data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clbench.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
# What the tiny data needs beyond the README's own command: the first half must leave images for the second.
SETS = {"Scenario": ["--set", "scenario.split_at=20"]}


def _plugin(code: str) -> tuple[str, str]:
    found = re.search(r"^class (\w+)\((Strategy|Scenario)\):", code, flags=re.MULTILINE)
    assert found, "a README Python example defines no Strategy or Scenario"
    return found.group(1), found.group(2)


def test_the_readme_has_its_strategy_and_scenario_examples():
    assert sorted(_plugin(code)[1] for code in BLOCKS) == ["Scenario", "Strategy"]


@pytest.mark.parametrize("code", BLOCKS, ids=[_plugin(code)[0] for code in BLOCKS])
def test_a_readme_example_runs_as_written(code: str, tiny_root: Path, tmp_path: Path, tracking_store: str, capsys):
    name, kind = _plugin(code)
    path = tmp_path / "example.py"
    path.write_text(code)
    store = tracking_store
    option = "--strategy" if kind == "Strategy" else "--scenario"
    args = ["run", option, f"{path}:{name}", "--preset", "tiny", "--data", str(tiny_root), *SETS.get(kind, [])]
    assert main([*args, "--tracking-uri", store, "--no-progress"]) == 0
    assert "Accuracy matrix" in capsys.readouterr().out
    client = MlflowClient(store)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
