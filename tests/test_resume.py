"""Interrupted runs: SIGKILL mid-experience, resume, and get exactly the uninterrupted run's results, in one
MLflow run; Ctrl-C ends the run KILLED with its checkpoint saved; orphaned runs do not stay RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from clbench.cli import main
from clbench.report import tracking
from clbench.training import checkpoints

EXPERIMENT = "resume-test"

# EWC plus a plugin that signals its own process in experience 1's second epoch, when told to by the
# environment: EWC has strategy state (importances from experience 0) that a resumed run must get back.
INTERRUPTED_EWC = """
import os
import signal
from dataclasses import dataclass

from avalanche.training.plugins import SupervisedPlugin

from clbench.strategies.ewc import EWC


class SignalMidExperience(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.iterations = 0

    def after_training_iteration(self, strategy, **kwargs):
        if strategy.experience.current_experience == 1:
            self.iterations += 1
            name = os.environ.get("CLBENCH_TEST_SIGNAL")
            if name and self.iterations == 8:  # 5 iterations per epoch: mid-way through epoch 2 of 3
                os.kill(os.getpid(), getattr(signal, name))


@dataclass
class InterruptedEWC(EWC):
    name = "interrupted-ewc"

    def plugins(self, model):
        return [*super().plugins(model), SignalMidExperience()]
"""


def _clbench(args: list[str], cache: Path, cwd: Path, signal_name: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLBENCH_CACHE_DIR=str(cache))
    env.pop("CLBENCH_TEST_SIGNAL", None)
    if signal_name:
        env["CLBENCH_TEST_SIGNAL"] = signal_name
    command = [sys.executable, "-m", "clbench", *args]
    # A shell starts background jobs with SIGINT ignored, and children inherit that: restore the default so the
    # Ctrl-C test sees what a user's Ctrl-C does however the test suite itself was started.
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, preexec_fn=restore_sigint
    )


def _accuracy(store: str) -> tuple[str, dict[str, float], list]:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = client.search_runs([experiment])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    compared = ("accuracy_frac/", "type_accuracy_frac/", "film/", "forgetting_frac/")  # film: moves with any weight
    metrics = {k: v for k, v in finished[0].data.metrics.items() if k.startswith(compared)}
    return finished[0].info.run_id, metrics, runs


def _final_weights(store: str, run_id: str, folder: Path) -> dict[str, torch.Tensor]:
    path = MlflowClient(store).download_artifacts(run_id, "model.pt", str(folder.mkdir() or folder))
    return torch.load(path, weights_only=True)


@pytest.fixture()
def plugin(tmp_path: Path) -> str:
    path = tmp_path / "interrupted.py"
    path.write_text(INTERRUPTED_EWC)
    return f"{path}:InterruptedEWC"


def _run_args(plugin: str, tiny_root: Path, store: str) -> list[str]:
    data = ["--preset", "tiny", "--data", str(tiny_root), "--epochs", "2,3", "--set", "ewc_lambda=50"]
    return ["run", "--strategy", plugin, *data, "--tracking-uri", store, "--experiment", EXPERIMENT, "--no-progress"]


@pytest.mark.slow  # 25 s; the Ray test SIGKILLs a cell mid-experience and resumes it, the contract test every strategy
def test_sigkill_mid_experience_then_resume_equals_an_uninterrupted_run(
    plugin, tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    reference_store, store = f"sqlite:///{tmp_path / 'reference.db'}", f"sqlite:///{tmp_path / 'killed.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLBENCH_TEST_SIGNAL", raising=False)
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "cache-reference"))
    assert main(_run_args(plugin, tiny_root, reference_store)) == 0  # uninterrupted, in this process

    cache = tmp_path / "cache"  # only the killed run needs a process of its own
    killed = _clbench(_run_args(plugin, tiny_root, store), cache, tmp_path, signal_name="SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    [path] = (cache / "checkpoints" / "runs").glob("*.pt")
    saved = torch.load(path, weights_only=True)
    assert (saved["experience"], saved["epochs_done"]) == (1, 1) and len(saved["boundaries"]) == 1
    client = MlflowClient(store)
    run = client.get_run(path.stem)
    assert run.info.status == "RUNNING"  # a SIGKILLed process cannot end its run ...
    tracking.configure(store)
    assert tracking.end_orphaned_runs(EXPERIMENT) == [path.stem]  # ... the next command on the store does
    assert client.get_run(path.stem).info.status == "KILLED"

    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(cache))
    capsys.readouterr()
    assert main(["run", "--resume", "--no-progress"]) == 0
    assert f"resuming run {path.stem} at experience 1 (CLEVR-Humans), after 1 finished epoch" in capsys.readouterr().err

    reference_id, expected, _ = _accuracy(reference_store)
    run_id, got, runs = _accuracy(store)
    assert run_id == path.stem and len(runs) == 1  # one MLflow run, continued
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert got == expected and len(got) >= 40
    weights = [
        _final_weights(s, r, tmp_path / name)
        for s, r, name in ((reference_store, reference_id, "a"), (store, run_id, "b"))
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not path.exists()  # a finished run keeps no checkpoint


@pytest.mark.slow  # 34 s in a subprocess; test_strategy_contract.py interrupts and resumes every strategy in-process
@pytest.mark.parametrize(("signal_name", "status"), [("SIGINT", 130), ("SIGTERM", 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_ends_the_run_killed_with_its_checkpoint_and_says_how_to_resume(
    plugin, tiny_root, tmp_path, signal_name, status
):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache = tmp_path / "cache"
    interrupted = _clbench(_run_args(plugin, tiny_root, store), cache, tmp_path, signal_name=signal_name)
    assert interrupted.returncode == status
    [path] = (cache / "checkpoints" / "runs").glob("*.pt")
    assert f"python -m clbench run --resume {path.stem}" in interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    assert MlflowClient(store).get_run(path.stem).info.status == "KILLED"
    resumed = _clbench(["run", "--resume", path.stem, "--no-progress"], cache, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert MlflowClient(store).get_run(path.stem).info.status == "FINISHED"


def test_resume_with_nothing_to_resume_is_one_line(tmp_path, monkeypatch, capsys):
    from clbench.cli import main

    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", "--resume"]) == 2
    assert "no interrupted run to resume" in capsys.readouterr().err
    assert main(["run", "--resume", "0123abcd"]) == 2
    assert "no checkpoint for run 0123abcd" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_named_with_its_fix(tmp_path, monkeypatch, capsys):
    from clbench.cli import main

    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    path = checkpoints.run_path("deadbeef")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert main(["run", "--resume", "deadbeef"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and f"delete {path}" in err
