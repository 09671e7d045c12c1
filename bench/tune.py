"""What tuning costs: one trial against a plain run of the same settings, and two workers on one study against one.

Everything starts from a warm experience-0 cache (the first run trains it), as every trial after a study's first
does. A trial's time is Optuna's own record of it (start to end, its MLflow child run included); the plain run's
is `run`'s wall time. The worker comparison runs the same number of trials twice, in separate studies, with
`--jobs 1` and `--jobs 2`, final reruns left out.

    python bench/tune.py [--preset tiny] [--strategy ewc] [--trials 4]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from clbench.config import PRESETS
from clbench.core.console import quiet_libraries
from clbench.engines.search import tune
from clbench.engines.tune import OBJECTIVES, TuneSpec, load_study, open_storage
from clbench.run.loop import run
from clbench.scenario.contract import load as load_scenario
from clbench.strategy.contract import instantiate, resolve
from clbench.strategy.search import search_space


def plain_run(config, strategy: str, uri: str) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run(config, instantiate(resolve(strategy), {}), load_scenario("clevr-humans"), tracking_uri=uri, progress=False)
    return time.perf_counter() - started


def timed_tune(spec: TuneSpec, jobs: int, uri: str, home: Path) -> tuple[float, list[float]]:
    """Wall time of the search, and each trial's own duration."""
    storage = f"sqlite:///{home / f'optuna-{spec.study}.db'}"
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = tune(spec, jobs=jobs, tracking_uri=uri, storage=storage, out=home / "out")
    study = load_study(spec, open_storage(storage))
    durations = [t.duration.total_seconds() for t in study.trials if t.duration is not None]
    return outcome.wall_time_s, durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--strategy", default="ewc")
    parser.add_argument("--trials", type=int, default=4, help="trials of the worker comparison")
    args = parser.parse_args()
    quiet_libraries(debug=False)
    config = PRESETS[args.preset]
    space = tuple((k, str(v)) for k, v in search_space(resolve(args.strategy), {}, args.strategy).items())
    spec = TuneSpec(args.strategy, config, space, (OBJECTIVES["average_accuracy"],), 1, final_seeds=())
    print(f"preset {args.preset}, strategy {args.strategy}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.chdir(home)  # MLflow artifacts land here, not in the repository
        os.environ["CLBENCH_CACHE_DIR"] = str(home / "cache")
        uri = f"sqlite:///{home / 'mlflow.db'}"
        plain_run(config, args.strategy, uri)  # generates the data and caches experience 0
        plain = plain_run(config, args.strategy, uri)
        _, (trial,) = timed_tune(replace(spec, study="one-trial"), 1, uri, home)
        print(f"one trial {trial:.1f} s against a plain run {plain:.1f} s: {trial / plain:.2f}× (target ≤ 1.05×)")
        many = replace(spec, trials=args.trials)
        one, _ = timed_tune(replace(many, study="one-worker"), 1, uri, home)
        two, _ = timed_tune(replace(many, study="two-workers"), 2, uri, home)
        print(
            f"{args.trials} trials: one worker {one:.1f} s, two workers {two:.1f} s: {two / one:.2f}× (target ≤ 0.6×)"
        )


if __name__ == "__main__":
    main()
