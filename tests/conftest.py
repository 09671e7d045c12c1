"""Shared fixtures: a tiny generated dataset and an isolated MLflow store and cache per session."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_homes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep caches and generated data out of the user's home while testing."""
    home = tmp_path_factory.mktemp("clbench-home")
    os.environ["CLBENCH_CACHE_DIR"] = str(home / "cache")
    os.environ["CLBENCH_DATA_HOME"] = str(home / "data")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    # The tests' Ray head (tests.services) takes only this session's token. Set before anything imports Ray,
    # which reads its authentication settings once per process.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)


@pytest.fixture(scope="session", autouse=True)
def _cores_shared_between_workers() -> None:
    """Under pytest-xdist (`-n N`) the N workers share the machine: each gets its share of the cores for torch's
    threads, and so do the processes its tests start. Without it, N workers of as many threads as cores wait on
    each other at every parallel region, two to three times slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from clbench.core.cores import usable_cores

        threads = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: without this, a test's default store would be
    whichever store an earlier test configured last (a stopped server, another test's folder)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clbench.synth import generate

    return generate(tmp_path_factory.mktemp("tiny") / "data", "tiny", seed=0, progress=False)


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema made and nothing in it. Making the schema (MLflow's migrations) costs
    about 2 s; a test's store is a copy of this one, the same file MLflow would have made."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture()
def tracking_store(tmp_path: Path, _empty_store: Path) -> str:
    shutil.copyfile(_empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# Services started by the tests themselves, on 127.0.0.1 (pytest finds fixtures imported here).
from tests.services import mlflow_server, ray_head, swept_on_ray  # noqa: E402, F401
