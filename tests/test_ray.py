"""Sweeps on a real Ray cluster (`ray start --head`, 2 CPUs, on 127.0.0.1) against a real `mlflow server`: one
cell's Ray worker is SIGKILLed mid-cell, Ray retries it, the retry goes on from its checkpoint in the same MLflow
run, every cell ends FINISHED, and the same command again skips them all."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from clbench.cli import main
from clbench.engines.ray import local_store_problem
from clbench.report.tracking import KIND_TAG, PARENT_TAG
from clbench.training import checkpoints
from tests.services import RAY_EXPERIMENT, resumed_after


@pytest.mark.slow  # 80 s: a Ray head, two workers and an MLflow server, started here
def test_a_sweep_on_a_ray_cluster_survives_a_killed_worker(swept_on_ray, mlflow_server, tmp_path, monkeypatch, capsys):
    sweep = swept_on_ray
    assert sweep.exit_code == 0, sweep.output[-3000:]
    assert "sweep on Ray: 2 cells at a time" in sweep.output
    assert "4 cells finished, 0 skipped (done before), 0 failed" in sweep.output

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(RAY_EXPERIMENT).experiment_id
    parent = client.search_runs([experiment], f"tags.`{KIND_TAG}` = 'sweep'")[0]
    cells = client.search_runs([experiment], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(cells) == 4, "a retried cell continues its own run: no second run for it"
    assert {run.info.status for run in cells} == {"FINISHED"}
    assert sweep.killed in {run.info.run_id for run in cells}
    log = Path(client.download_artifacts(sweep.killed, "cell.log", str(tmp_path))).read_text()
    after = resumed_after(log, sweep.killed)
    assert after is not None and after >= sweep.killed_after, log[-2000:]  # the retry went on from its checkpoint
    assert not checkpoints.run_path(sweep.killed).exists()  # finished: its checkpoint is gone

    monkeypatch.chdir(sweep.cwd)
    assert main(sweep.argv) == 0  # the same command again
    out = capsys.readouterr().out
    assert "4 of 4 cells already finished" in out, out[-2000:]


def test_a_cluster_of_several_nodes_refuses_a_local_store():
    assert local_store_problem("sqlite:////work/mlflow.db", nodes=1) is None  # one machine: fine
    problem = local_store_problem("sqlite:////work/mlflow.db", nodes=3)
    assert problem is not None and "3 nodes" in problem[0] and "mlflow server" in problem[1]
    assert local_store_problem("http://10.0.0.5:5000", nodes=3) is None
