"""A sweep told to stop (SIGTERM) or killed outright (SIGKILL) leaves no worker behind, and SIGTERM ends its
runs as Ctrl-C does: KILLED in MLflow, one line, the exit status a shell expects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clbench.core.termination import EXIT_TERMINATED, Terminated, sigterm_as_interrupt
from clbench.report import tracking
from clbench.report.tracking import KIND_TAG

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended while we looked
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"after {seconds:g} s: {what}")


def _workers(pid: int) -> list[int]:
    """The sweep's pool workers (spawned interpreters), not its resource tracker."""
    return [c for c in _children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.parametrize(
    "sent",
    [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],  # 35 s each, mostly interpreter starts
    ids=["sigterm", "sigkill"],
)
def test_a_stopped_sweep_leaves_no_worker_running(sent, tiny_root, tracking_store, tmp_path):
    command = [sys.executable, "-m", "clbench", "sweep", "--preset", "tiny", "--data", str(tiny_root)]
    command += ["--strategies", "naive", "--fractions", "1", "--seeds", "0,1", "--no-references", "--jobs", "2"]
    command += ["--epochs", "1000", "--tracking-uri", tracking_store, "--experiment", "stopped", "--no-progress"]
    env = dict(os.environ, CLBENCH_CACHE_DIR=str(tmp_path / "cache"))
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = _until(lambda: _workers(sweep.pid), 120, "the sweep started no worker")
        client = MlflowClient(tracking_store)
        _until(lambda: _running_cell(client), 60, "no cell run started")  # the worker is inside a cell
        sweep.send_signal(sent)
        _, stderr = sweep.communicate(timeout=60)
    finally:
        sweep.kill()
    assert sweep.returncode == (EXIT_TERMINATED if sent == signal.SIGTERM else -signal.SIGKILL)
    _until(lambda: not any(_alive(w) for w in workers), 15, f"workers {workers} outlived the sweep")

    if sent == signal.SIGTERM:  # it had the chance to clean up: one line, and its runs ended KILLED
        assert stderr.strip().splitlines()[-1] == "terminated" and "Traceback" not in stderr
        experiment = client.get_experiment_by_name("stopped").experiment_id
        [parent] = client.search_runs([experiment], filter_string=f"tags.`{KIND_TAG}` = 'sweep'")
        assert parent.info.status == "KILLED"
        # A cell told to stop while MLflow was creating its run cannot name it; the next command on the store
        # marks such a run, whose process is gone, KILLED (the fallback a SIGKILLed process relies on).
        tracking.configure(tracking_store)
        tracking.end_orphaned_runs("stopped")
        cells = client.search_runs([experiment], filter_string=f"tags.`{KIND_TAG}` = 'cell'")
        assert cells and {r.info.status for r in cells} == {"KILLED"}


def _running_cell(client: MlflowClient) -> bool:
    experiment = client.get_experiment_by_name("stopped")
    if experiment is None:
        return False
    cells = f"attributes.status = 'RUNNING' and tags.`{KIND_TAG}` = 'cell'"
    return bool(client.search_runs([experiment.experiment_id], filter_string=cells))


def test_sigterm_raises_terminated_only_inside_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; this line is never finished
    assert signal.getsignal(signal.SIGTERM) is before
