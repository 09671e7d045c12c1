"""Sweep cost with the experience-0 cache and without it, side by side in one process.

The same small sweep runs twice, each from an empty checkpoint cache: once reusing experience 0 (trained once
per seed, every other cell starts from it) and once training it in every cell. Prints both wall times, how
often experience 0 was trained, and the ratio.

    python bench/sweep.py [--preset small] [--strategies naive,ewc] [--fractions 0.25,1.0] [--seeds 0]
                          [--clevr-questions 6000] [--jobs 1]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from clbench.config import PRESETS
from clbench.core.console import quiet_libraries
from clbench.engines.sweep import SweepSpec, sweep


def timed_sweep(spec: SweepSpec, reuse: bool, jobs: int, home: Path) -> tuple[float, int, int]:
    config = replace(spec.config, train=replace(spec.config.train, reuse_experience0=reuse))
    os.environ["CLBENCH_CACHE_DIR"] = str(home / ("reuse" if reuse else "no-reuse"))
    result = sweep(
        replace(spec, config=config),
        jobs=jobs,
        experiment="bench-sweep",
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        progress=False,
        out=io.StringIO(),
    )
    return result.wall_time_s, result.experience0_trained, result.count("FINISHED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--strategies", default="naive,ewc")
    parser.add_argument("--fractions", default="0.25,1.0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--clevr-questions", type=int, default=6000, help="cap on CLEVR train questions")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    quiet_libraries(debug=False)

    base = PRESETS[args.preset]
    config = replace(base, data=replace(base.data, max_train_questions=args.clevr_questions))
    spec = SweepSpec.over_fractions(args.strategies, args.seeds, args.fractions, config)
    cells = len(spec.cells())
    print(f"sweep of {cells} cells ({args.strategies} × {args.fractions} × seeds {args.seeds}), preset {args.preset}")
    print(f"CLEVR train capped at {args.clevr_questions} questions, {args.jobs} job(s), {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.chdir(home)  # MLflow artifacts land here, not in the repository
        timings = {}
        for reuse in (True, False):
            seconds, trained, finished = timed_sweep(spec, reuse, args.jobs, home)
            label = "with reuse" if reuse else "without reuse"
            timings[reuse] = seconds
            print(f"{label:14s} {seconds:7.1f} s   experience 0 trained {trained}×   {finished}/{cells} cells finished")
    print(f"ratio (without / with): {timings[False] / timings[True]:.2f}×")


if __name__ == "__main__":
    main()
