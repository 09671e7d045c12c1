"""Services the tests start themselves, on 127.0.0.1: an MLflow tracking server and a Ray head node, and a sweep
on that Ray cluster whose cell loses its worker mid-way (the Ray tests check the recovery, the MLflow UI tests
show its runs).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


@contextlib.contextmanager
def clbench_ui(args: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> Iterator[str]:
    """`python -m clbench ui ARGS --port P` started as a user starts it, up; yields what it printed so far. Its
    server and workers are killed after."""
    port = free_port()
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "clbench", "ui", *args, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process, log, "clbench ui", timeout_s=300)
        yield log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 and a free port: SQLite backend, proxied artifact store."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "art")]
    log = home / "server.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=home, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, log, "mlflow server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[str]:
    """A Ray head node with 2 CPUs in its own session, addressed on 127.0.0.1, with token authentication (Ray
    listens on every interface: the session's token, set in conftest, keeps anyone else out)."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    log = Path(temp) / "head.log"
    ray = str(Path(sys.executable).with_name("ray"))  # the CLI beside this Python, activated or not
    command = [ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2"]
    command += ["--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"]
    command += ["--object-store-memory=200000000"]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(temp, ignore_errors=True)


RAY_EXPERIMENT = "ray-sweep"


@dataclass(frozen=True)
class RaySweep:
    argv: list[str]  # the sweep, as a user types it after `python -m clbench`
    cwd: Path
    output: str
    exit_code: int
    killed: str  # the run id of the cell whose worker was killed
    killed_after: int  # the epochs of its second experience it had checkpointed then


@pytest.fixture(scope="session")
def swept_on_ray(ray_head, mlflow_server, tiny_root, tmp_path_factory) -> RaySweep:
    """`sweep --engine ray` (naive, ewc × fractions 0.5, 1) on the Ray head against the MLflow server, driven from
    this process; once a cell has checkpointed mid-way through its second experience, its Ray worker is
    SIGKILLed."""
    from clbench.cli import main

    cwd = tmp_path_factory.mktemp("ray-client")
    argv = ["sweep", "--preset", "tiny", "--data", str(tiny_root), "--strategies", "naive,ewc", "--seeds", "0"]
    argv += ["--fractions", "0.5,1", "--no-references", "--set", "train.epochs=1,20", "--experiment", RAY_EXPERIMENT]
    argv += ["--no-progress", "--engine", "ray", "--address", ray_head, "--tracking-uri", mlflow_server]
    done, killed = threading.Event(), []
    killer = threading.Thread(
        target=_kill_a_cell_mid_experience, args=(Path(os.environ["CLBENCH_CACHE_DIR"]), mlflow_server, done, killed)
    )
    killer.start()
    output = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(output):
            patch.chdir(cwd)
            code = main(argv)
    finally:
        done.set()
        killer.join()
    if not killed:
        pytest.fail(f"no cell was caught mid-experience: {output.getvalue()[-3000:]}")
    return RaySweep(argv, cwd, output.getvalue(), code, *killed[0])


def _kill_a_cell_mid_experience(cache: Path, server: str, done: threading.Event, killed: list) -> None:
    """Wait for a cell to checkpoint mid-way through its second experience, then SIGKILL its Ray worker."""
    from mlflow import MlflowClient

    from clbench.report.tracking import PID_TAG

    while not done.wait(0.1):
        found = mid_experience_checkpoint(cache)
        if found is not None:
            os.kill(int(MlflowClient(server).get_run(found[0]).data.tags[PID_TAG]), signal.SIGKILL)
            killed.append(found)
            return


def mid_experience_checkpoint(cache: Path) -> tuple[str, int] | None:
    """A run checkpoint written mid-way through a second experience, if there is one now: (run id, epochs done)."""
    runs = cache / "checkpoints" / "runs"
    for path in runs.glob("*.pt") if runs.is_dir() else []:
        try:
            blob = torch.load(path, weights_only=True)
        except Exception:  # being replaced right now
            continue
        if blob["experience"] == 1 and blob["epochs_done"] >= 2:
            return blob["run_id"], blob["epochs_done"]
    return None


def resumed_after(log: str, run_id: str) -> int | None:
    """The finished epochs a cell's log says it resumed after, if it resumed."""
    found = re.search(rf"resuming run {run_id} at experience 1 \(.*\), after (\d+) finished epoch", log)
    return int(found[1]) if found else None
