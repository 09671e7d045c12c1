from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from clbench.core.errors import ConfigError
from clbench.strategy.contract import Strategy, available, instantiate, resolve

BUILT_INS = {"naive", "ewc", "replay", "frozen-generator", "generator-only"}


def test_built_in_strategies_are_found_through_entry_points():
    assert set(available()) >= BUILT_INS
    for name in BUILT_INS:
        assert issubclass(resolve(name), Strategy)


@pytest.mark.slow  # 11 s: a pip install into a fresh folder; CI installs the project itself
def test_plugin_folders_install_inside_clbench_not_as_top_level_packages(tmp_path: Path):
    """`strategies/` and `scenarios/` would clash with any other top-level package of those names."""
    import subprocess

    probe = (
        "import importlib.util as u, clbench.strategies.ewc, clbench.scenarios.clevr_humans;"
        "print(u.find_spec('strategies'), u.find_spec('scenarios'))"
    )
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert found.stdout.split() == ["None", "None"]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ConfigError, match="did you mean 'ewc'"):
        resolve("ewk")


def test_set_values_are_parsed_by_field_type_and_validated():
    ewc = instantiate(resolve("ewc"), {"ewc_lambda": "250", "mode": "separate"})
    assert ewc.ewc_lambda == 250.0
    replay = instantiate(resolve("replay"), {"mem_size": "64", "batch_size_mem": "none"})
    assert replay.mem_size == 64 and replay.batch_size_mem is None
    with pytest.raises(ConfigError, match="not a valid float"):
        instantiate(resolve("ewc"), {"ewc_lambda": "lots"})
    with pytest.raises(ConfigError, match=r"no parameter 'ewc_lamda'.*ewc_lambda"):
        instantiate(resolve("ewc"), {"ewc_lamda": "1"})
    with pytest.raises(ConfigError, match="not allowed"):
        instantiate(resolve("ewc"), {"mode": "sideways"})
    with pytest.raises(ConfigError, match="must be positive"):
        instantiate(resolve("replay"), {"mem_size": "0"})


def test_strategy_from_a_file_path(tmp_path: Path):
    path = tmp_path / "mine.py"
    path.write_text(
        textwrap.dedent(
            '''
            from clbench import Strategy, register

            @register("mine")
            class Mine(Strategy):
                """A user's strategy."""
                strength: float = 0.5
            '''
        )
    )
    cls = resolve(f"{path}:Mine")
    assert cls.name == "mine" and instantiate(cls, {"strength": "2"}).strength == 2.0


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        ("def broken(:\n", "Mine", "syntax error at line 1"),
        ("import not_a_module_anywhere\n", "Mine", "failed to import"),
        ("class Mine:\n    pass\n", "Mine", "not a Strategy subclass"),
        (
            "from clbench import Strategy\nclass Other(Strategy):\n    pass\n",
            "Mine",
            "no class 'Mine'.*Other",
        ),
    ],
)
def test_broken_plugin_files_raise_one_clear_error(tmp_path: Path, source: str, spec: str, message: str):
    path = tmp_path / "plugin.py"
    path.write_text(source)
    with pytest.raises(ConfigError, match=message):
        resolve(f"{path}:{spec}")


def test_missing_plugin_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(f"{tmp_path / 'nope.py'}:Mine")


def test_third_party_entry_point_is_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package declaring `clbench.strategies` in its metadata is found with no import by name."""
    package = tmp_path / "thirdparty_cl"
    package.mkdir()
    (package / "__init__.py").write_text(
        'from clbench import Strategy\n\nclass Lwf(Strategy):\n    """Third-party strategy."""\n'
        "    alpha: float = 1.0\n"
    )
    dist = tmp_path / "thirdparty_cl-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-cl\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[clbench.strategies]\nthird-lwf = thirdparty_cl:Lwf\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cls = resolve("third-lwf")
        assert cls.parameters() == {"alpha": 1.0}
        assert cls.describe() == "Third-party strategy."
    finally:
        sys.modules.pop("thirdparty_cl", None)
        from clbench.strategy.contract import STRATEGIES

        STRATEGIES._registry.pop("third-lwf", None)
