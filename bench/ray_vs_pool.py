"""The same sweep on the local process pool and on Ray, side by side on this machine.

Each engine runs the grid from an empty cache (so each trains experience 0 once per seed) in the order pool,
Ray, Ray, pool, so that drift on a shared machine falls on both alike. Prints each sweep's wall time, Ray's
speed relative to the pool (the target is at least 0.9), and the per-cell scheduling overhead: the time from
submitting a cell to its outcome that the cell did not spend running (a worker's start and imports when it has
none ready, queueing, transport). Ray's own start (a local instance) is in its wall time.

    python bench/ray_vs_pool.py [--preset tiny] [--epochs 2,20] [--strategies naive,ewc]
                                [--fractions 0.5,1] [--seeds 0] [--jobs 2]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from clbench.config import PRESETS
from clbench.config import override as override_config
from clbench.core.console import quiet_libraries
from clbench.engines.pool import Engine
from clbench.engines.sweep import SweepSpec, sweep


def timed(spec: SweepSpec, engine: str, jobs: int, home: Path, attempt: int) -> tuple[float, list[float], int]:
    """Wall time, per-cell overheads and finished cells of one sweep from an empty cache."""
    os.environ["CLBENCH_CACHE_DIR"] = str(home / f"{engine}-{attempt}")
    result = sweep(
        spec,
        jobs=jobs,
        engine=Engine(engine, cell_cpus=max(1, (os.cpu_count() or 1) // jobs)),
        experiment=f"bench-{engine}-{attempt}",
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        progress=False,
        out=io.StringIO(),
    )
    overheads = sorted(o.overhead_s for o in result.outcomes if o.status == "FINISHED")
    return result.wall_time_s, overheads, result.count("FINISHED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--epochs", default="2,20", help="per experience (default: 2,20, cells of some seconds)")
    parser.add_argument("--strategies", default="naive,ewc")
    parser.add_argument("--fractions", default="0.5,1")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--jobs", type=int, default=2, help="cells at once on the pool; Ray fits as many")
    args = parser.parse_args()
    quiet_libraries(debug=False)

    config = override_config(PRESETS[args.preset], {"train.epochs": args.epochs}, "--epochs")
    config = replace(config, eval=replace(config.eval, references=False))
    spec = SweepSpec.over_fractions(args.strategies, args.seeds, args.fractions, config)
    cells = len(spec.cells())
    print(f"{cells} cells ({args.strategies} × fractions {args.fractions} × seeds {args.seeds}), preset {args.preset}")
    print(f"epochs {args.epochs}, {args.jobs} cells at a time, {os.cpu_count()} CPU cores; order pool, Ray, Ray, pool")
    figures: dict[str, list[tuple[float, list[float]]]] = {"pool": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for attempt, engine in enumerate(("pool", "ray", "ray", "pool")):
            wall, overheads, finished = timed(spec, engine, args.jobs, Path(tmp), attempt)
            assert finished == cells, f"{engine}: only {finished} of {cells} cells finished"
            figures[engine].append((wall, overheads))
            each = ", ".join(f"{o:.2f}" for o in overheads)
            print(f"  {engine:<4}  {wall:6.1f} s   per-cell overhead (s, sorted): {each}")
    pool, ray = (statistics.mean(w for w, _ in figures[e]) for e in ("pool", "ray"))
    print(f"pool {pool:.1f} s, Ray {ray:.1f} s: Ray runs at {pool / ray:.2f}× the pool's speed (target ≥ 0.90)")
    for engine in ("pool", "ray"):
        overheads = [o for _, each in figures[engine] for o in each]
        first = [each[-1] for _, each in figures[engine]]  # the largest: a cell that waited for a fresh worker
        print(
            f"per-cell overhead, {engine}: mean {statistics.mean(overheads):.2f} s, median "
            f"{statistics.median(overheads):.2f} s (a cell on a worker that must start and import first: up to "
            f"{max(first):.1f} s)"
        )


if __name__ == "__main__":
    main()
