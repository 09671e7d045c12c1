"""Every command the CLI prints for the user to run next runs as printed: copied from the output, in the folder the
user is in, it does what it says."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from clbench.cli import main
from tests.services import clbench_ui


def _printed_commands(text: str) -> list[str]:
    """The `python -m clbench ...` commands in the output, each up to where its sentence goes on."""
    return [c.rstrip(".") for c in re.findall(r"(python -m clbench [^\n]+?)(?:, then open |\n|$)", text)]


def _args(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "clbench"], command
    return words[3:]


def test_the_commands_a_sweep_prints_run_as_printed(tiny_root: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'elsewhere' / 'store.db'}"  # not the default store: the commands must say it
    argv = ["sweep", "--preset", "tiny", "--data", str(tiny_root), "--strategies", "naive", "--seeds", "0"]
    argv += ["--fractions", "1", "--no-references", "--epochs", "0", "--experiment", "cmp3", "--tracking-uri", store]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    commands = _printed_commands(out)
    [report] = [c for c in commands if _args(c)[0] == "report"]
    [ui] = [c for c in commands if _args(c)[0] == "ui"]
    assert "--experiment cmp3" in report and store in report

    assert main(_args(report)) == 0
    assert (tmp_path / "results" / "clevr-humans" / "summary.md").is_file()

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with clbench_ui(_args(ui)[1:], tmp_path / "ui.log", env) as printed:  # the same command, on a free port
        experiment = re.search(r"#/experiments/(\d+)/runs", out)[1]
        assert re.search(rf"127\.0\.0\.1:\d+/#/experiments/{experiment}/runs\?workflowType=machine_learning", printed)


def test_the_command_a_feature_extraction_prints_names_the_data_it_read(tiny_root: Path, tmp_path, monkeypatch, capsys):
    """Its `run` command is checked as far as a run checks its arguments: the run itself is the feature tests'."""
    import clbench.run.loop

    monkeypatch.chdir(tmp_path)
    size = ["--size", "32x48", "--weights", "random", "--device", "cpu", "--no-progress"]
    assert main(["data", "features", str(tiny_root), *size]) == 0
    [command] = _printed_commands(capsys.readouterr().out)
    started = []
    monkeypatch.setattr(clbench.run.loop, "run", lambda config, *a, **k: started.append(config))
    assert main(_args(command)) == 0
    [config] = started
    assert config.data.root == str(tiny_root) and config.model.stem == "resnet101"
    assert (config.model.image_height, config.model.image_width, config.model.stem_weights) == (32, 48, "random")
