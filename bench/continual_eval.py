"""What continual evaluation costs: fine-tuning time with it (at the default `eval.every` and `eval.subset`) and
without it, the two timed alternately (off-on, then on-off) in one process so that machine noise hits both.

Each round runs the scenario's whole sequence twice with the experience-0 cache (so only the later
experiences train, the part continual evaluation watches) and compares the runs' own training time
(`cost/train_time_s`). Prints both and their ratio; the target is at most 1.10. The runs with it also time
their own evaluations (`cost/continual_eval_s`), a figure that machine noise hardly moves.

    python bench/continual_eval.py [--preset small] [--rounds 2] [--every 20] [--subset 256]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from clbench.config import PRESETS, EvalConfig
from clbench.evaluation import names as metric_names
from clbench.run.loop import run
from clbench.strategy.contract import available, instantiate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--strategy", default="naive")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every", type=int, default=EvalConfig.every)
    parser.add_argument("--subset", type=int, default=EvalConfig.subset)
    args = parser.parse_args()

    base = PRESETS[args.preset]
    settings = {
        "off": replace(base, eval=replace(base.eval, every=0)),
        "on": replace(base, eval=replace(base.eval, every=args.every, subset=args.subset)),
    }
    times: dict[str, list[float]] = {"off": [], "on": []}
    inside: list[float] = []  # within the runs with it: the share of training time spent evaluating
    points = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        strategy = instantiate(available()[args.strategy], {})
        run(settings["off"], strategy, tracking_uri=store, progress=False, out=io.StringIO())  # warm the caches
        for round_ in range(args.rounds):
            order = list(settings) if round_ % 2 == 0 else list(settings)[::-1]  # ABBA: a drift hits both alike
            for name in order:
                config = settings[name]
                result = run(config, strategy, tracking_uri=store, progress=False, out=io.StringIO())
                times[name].append(result.cost[metric_names.TRAIN_TIME])
                if name == "on":
                    inside.append(result.cost[metric_names.CONTINUAL_TIME] / result.cost[metric_names.TRAIN_TIME])
                points = max(points, sum(len(c) for per in result.curves.values() for c in per.values()))
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(
        f"continual evaluation, {args.preset} preset, {args.strategy}: every {args.every} iterations, "
        f"{args.subset} questions per earlier test set ({points} evaluations per run)"
    )
    print(f"{'':<28}{'train time (s), median':>24}{'rounds':>8}")
    print(f"{'without':<28}{off:>24.1f}{len(times['off']):>8}")
    print(f"{'with':<28}{on:>24.1f}{len(times['on']):>8}")
    print(f"ratio with / without: {on / off:.3f} (target ≤ 1.10; side by side, so machine noise counts)")
    share = statistics.median(inside)
    print(f"timed inside the runs with it: {100 * share:.1f} % of training time, a ratio of {1 / (1 - share):.3f}")


if __name__ == "__main__":
    main()
