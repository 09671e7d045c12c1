"""One run on two processes: `torchrun --nproc-per-node 2 -m clbench run` (gloo on CPU) is one MLflow run, which
survives being stopped mid-experience and continues with `--resume`, still one run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from clbench.training import distributed
from tests.services import mid_experience_checkpoint

EXPERIMENT = "torchrun-test"


def _torchrun(*args: str) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return [*launcher, "-m", "clbench", *args]


def _mid_experience_checkpoint(cache: Path, process: subprocess.Popen) -> tuple[str, int]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        found = mid_experience_checkpoint(cache)
        if found is not None:
            return found
        time.sleep(0.2)
    pytest.fail(f"no mid-experience checkpoint: {process.communicate()[0][-3000:]}")


@pytest.mark.slow  # 45 s: two torchrun launches; the rank agreement and sharding are unit-tested below
def test_a_two_process_run_is_one_mlflow_run_and_resumes(tmp_path, tiny_root, tracking_store, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(cache))
    store = tracking_store
    command = _torchrun("run", "--preset", "tiny", "--data", str(tiny_root), "--strategy", "ewc", "--no-progress")
    command += ["--set", "train.epochs=1,12", "--experiment", EXPERIMENT, "--tracking-uri", store]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_id, epochs_done = _mid_experience_checkpoint(cache, first)
    first.send_signal(signal.SIGTERM)  # what a scheduler's preemption does to the launcher
    first.communicate(timeout=60)

    resumed = subprocess.run(
        _torchrun("run", "--resume", run_id, "--no-progress"), cwd=tmp_path, capture_output=True, text=True
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming run {run_id} at experience 1" in output
    assert output.count("Accuracy matrix") == 1  # rank 0 alone reports

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    run = runs[0]
    assert run.data.params["train.batch_size"] == "16"  # the global batch, 8 per process
    assert "accuracy_matrix.png" in {a.path for a in client.list_artifacts(run_id)}
    losses = client.get_metric_history(run_id, "Loss_Epoch/train_phase/train_stream/Task000")
    steps = [m.step for m in losses]
    # Each epoch once, at the step the uninterrupted run logs it: the resumed run went on from its checkpoint
    # (an experience started again would log its first epochs twice). The epoch whose checkpoint was written
    # but whose metrics were not yet sent when the launcher was stopped may be missing.
    assert len(steps) == len(set(steps)) and len(steps) in (12, 13), sorted(steps)
    assert all(torch.isfinite(torch.tensor(m.value)) for m in losses)
    assert not (cache / "checkpoints" / "runs" / f"{run_id}.pt").exists()
    assert epochs_done >= 2


def test_a_sweep_is_refused_under_torchrun(monkeypatch):
    from clbench.cli import main

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched()
    assert main(["sweep", "--preset", "tiny"]) == 2


def test_a_sampler_shard_is_a_share_of_one_process_permutation():
    """Batch k of every rank together is batch k of one process, drawn from the same random state."""
    data = list(range(23))
    torch.manual_seed(5)
    one = list(distributed.ShardedRandomSampler(data, num_replicas=1, rank=0))
    shares = []
    for rank in (0, 1):
        torch.manual_seed(5)
        shares.append(list(distributed.ShardedRandomSampler(data, num_replicas=2, rank=rank)))
    torch.manual_seed(5)
    assert one == list(torch.utils.data.RandomSampler(data))  # one process: RandomSampler's own order
    assert len(shares[0]) == len(shares[1]) == 12
    interleaved = [i for pair in zip(*shares, strict=True) for i in pair]
    assert interleaved[:23] == one and interleaved[23] == one[0]  # padded with the first, as DistributedSampler


def test_the_agreement_digest_sees_weights_optimiser_and_strategy_state():
    """What the ranks compare at each experience's end: any difference in any of the three shows."""
    from types import SimpleNamespace

    from avalanche.training.plugins import EWCPlugin

    model = torch.nn.Linear(3, 2)
    strategy = SimpleNamespace(model=model, optimizer=torch.optim.Adam(model.parameters()))
    ewc = EWCPlugin(ewc_lambda=1.0)
    ewc.importances = {0: {"weight": torch.ones(2, 3)}}
    digest = distributed.state_digest(strategy, [ewc])
    assert digest == distributed.state_digest(strategy, [ewc])
    ewc.importances[0]["weight"][0, 0] = 2.0  # an EWC importance one rank computed differently
    assert distributed.state_digest(strategy, [ewc]) != digest
    changed = distributed.state_digest(strategy, [ewc])
    with torch.no_grad():
        model.bias[0] += 1e-6
    assert distributed.state_digest(strategy, [ewc]) != changed


def test_a_run_on_n_processes_has_its_own_experience0_cache_entry(monkeypatch):
    """Each rank's batch-norm statistics make N processes train another experience 0 than one: never shared."""
    from clbench.config import PRESETS
    from clbench.training import checkpoints

    one = checkpoints.experience0_key(PRESETS["tiny"], "data")
    monkeypatch.setattr(distributed, "world", lambda: 2)
    assert checkpoints.experience0_key(PRESETS["tiny"], "data") != one
    monkeypatch.setattr(distributed, "world", lambda: 1)
    assert checkpoints.experience0_key(PRESETS["tiny"], "data") == one  # one process: the plain run's entry
