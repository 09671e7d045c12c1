"""Several runs writing to one SQLite tracking store at once all finish, each with all of its data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clbench.evaluation.metrics import accuracy_key

PROCESSES = 4


@pytest.mark.slow  # 36 s: four processes; test_mlflow_ui.py's sweep shares a store between two workers
def test_four_runs_share_one_sqlite_store(tiny_root: Path, tmp_path: Path):
    store = f"sqlite:///{tmp_path / 'shared.db'}"  # new: the four also race to create its schema
    env = dict(os.environ, CLBENCH_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    common = ["run", "--preset", "tiny", "--data", str(tiny_root), "--tracking-uri", store, "--no-progress"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "clbench", *common, "--seed", str(seed), "--experiment", "shared"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(PROCESSES)
    ]
    outcomes = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert [code for code, _ in outcomes] == [0] * PROCESSES, [err[-2000:] for _, err in outcomes]

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert len(runs) == PROCESSES
    assert sorted(r.data.params["seed"] for r in runs) == [str(s) for s in range(PROCESSES)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    names = {frozenset(r.data.metrics) for r in runs}
    assert len(names) == 1 and len(next(iter(names))) > 50  # every run logged the same, complete set of metrics
    for run in runs:
        history = client.get_metric_history(run.info.run_id, accuracy_key(0))
        assert len(history) == 2
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"accuracy_matrix.csv", "model.pt"}
