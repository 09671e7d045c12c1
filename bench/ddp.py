"""One run on one process against the same run on two (torchrun, gloo, CPU), at the same global batch size.

For each seed, `python -m clbench run` and `torchrun --nproc-per-node 2 -m clbench run` train the same config
(experience 0 trained in both: the cache is off). Prints the final accuracy matrix of each, the training loss
at every epoch, and how far the two-process run is from the one-process run next to how far one-process runs
of different seeds are from each other: the two are the same experiment when the first is within the second.

Why not equal: each rank normalises its half of a batch with its own batch-norm statistics (DDP's default;
`SyncBatchNorm` runs on GPUs only) and gradients are summed in another order. Everything else is the same:
the ranks' shuffles are shares of the permutation one process draws, so a global batch holds the same
questions on one process or two.

    python bench/ddp.py [--preset small] [--epochs 2,2] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from clbench.engines.sweep import parse_list
from clbench.evaluation import names as metric_names

EXPERIMENT = "bench-ddp"
LOSS = "Loss_Epoch/train_phase/train_stream/Task000"


def launch(processes: int, seed: int, args: argparse.Namespace, store: str, cwd: Path) -> float:
    clbench = ["-m", "clbench", "run", "--preset", args.preset, "--set", f"train.epochs={args.epochs}"]
    clbench += ["--set", "train.reuse_experience0=false", "--seed", str(seed), "--tracking-uri", store]
    clbench += ["--experiment", EXPERIMENT, "--run-name", f"{processes}proc-seed{seed}", "--no-progress"]
    if processes == 1:
        command = [sys.executable, *clbench]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command += clbench
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - started


def figures(client: MlflowClient, run) -> dict[str, float]:
    final = metric_names.final_accuracy("")
    row = {k.removeprefix(final): 100 * v for k, v in run.data.metrics.items() if k.startswith(final)}
    losses = sorted(client.get_metric_history(run.info.run_id, LOSS), key=lambda m: m.step)
    row |= {f"loss@{m.step}": m.value for m in losses}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", default="2,2")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = parse_list(args.seeds, int, "--seeds")
    print(f"preset {args.preset}, epochs {args.epochs}, seeds {args.seeds}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        walls = {}
        for seed, processes in itertools.product(seeds, (1, 2)):
            walls[(processes, seed)] = launch(processes, seed, args, store, Path(tmp))
            print(f"  seed {seed}, {processes} process(es): {walls[(processes, seed)]:.0f} s", flush=True)
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        rows = {}
        for run in client.search_runs([experiment]):
            processes, seed = run.info.run_name.split("-seed")
            rows[(processes, int(seed))] = figures(client, run)
    table = pd.DataFrame(rows).T.sort_index()
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())

    one, two = table.xs("1proc"), table.xs("2proc")
    ddp_gap = (two - one).abs()
    seed_gap = pd.DataFrame(
        {f"{a}-{b}": (one.loc[a] - one.loc[b]).abs() for a, b in itertools.combinations(one.index, 2)}
    ).T
    summary = pd.DataFrame({"2 proc vs 1 proc (mean |Δ|)": ddp_gap.mean(), "seed vs seed (mean |Δ|)": seed_gap.mean()})
    print(summary.round(3).to_string())
    speed = sum(walls[(1, s)] for s in seeds) / sum(walls[(2, s)] for s in seeds)
    print(f"wall time, 1 process / 2 processes: {speed:.2f}× (both on the same {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
