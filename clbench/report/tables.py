"""A sweep's tables: each a pandas frame of means and 95 % intervals across seeds, per strategy and setting."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

from clbench.data.spec import QUESTION_TYPES
from clbench.evaluation import names as metric_names
from clbench.report.measures import mean_ci
from clbench.report.runs import BEFORE, FRACTION, ORDER, SweepRuns, at_largest_fraction, strategy_order


def final_table(runs: SweepRuns) -> pd.DataFrame:
    """Per strategy and setting, at the largest fraction: final accuracy on every test set, and the summaries."""
    columns = {f"final {t}": metric_names.final_accuracy(t) for t in runs.tests}
    columns |= {
        "average accuracy": metric_names.AVERAGE_ACCURACY,
        "average forgetting": metric_names.AVERAGE_FORGETTING,
        "bwt": metric_names.BWT,
    }
    return mean_ci(at_largest_fraction(runs.cells), ["strategy", *runs.settings], columns)


_COST = {
    "train time (s)": metric_names.TRAIN_TIME,
    "wall time (s)": metric_names.WALL_TIME,
    "strategy memory (MB)": metric_names.HELD_BYTES,
    "stored questions": metric_names.HELD_QUESTIONS,
    "peak RSS (MB)": metric_names.PEAK_RSS,
}


def cost_table(runs: SweepRuns) -> pd.DataFrame:
    """Per strategy and setting, at the largest fraction: what a run cost (sweeps from before costs were logged:
    wall time only)."""
    return mean_ci(at_largest_fraction(runs.cells), ["strategy", *runs.settings], _COST)


def accuracy_table(runs: SweepRuns) -> pd.DataFrame:
    """Per strategy and fraction: accuracy on the first and last test sets, after the last experience and before."""
    first, last = runs.first, runs.last
    names = runs.experiences
    return mean_ci(
        runs.cells,
        ["strategy", *runs.settings, FRACTION],
        {
            "new_after": metric_names.accuracy(names[-1], last),
            "old_after": metric_names.accuracy(names[-1], first),
            "new_before": metric_names.accuracy(names[0], last),
            "old_before": metric_names.accuracy(names[0], first),
        },
    )


def forgetting_table(runs: SweepRuns) -> pd.DataFrame:
    """Forgetting of every earlier test set, their mean, and BWT, per strategy and setting (and fraction)."""
    by = ["strategy", *runs.settings, *([FRACTION] if FRACTION in runs.cells else [])]
    columns = {t: metric_names.forgetting(t) for t in runs.forgettable}
    columns |= {"average": metric_names.AVERAGE_FORGETTING, "bwt": metric_names.BWT}
    return mean_ci(runs.cells, by, columns)


def matrix(cells: pd.DataFrame) -> pd.DataFrame:
    """The mean accuracy matrix of cells that share one experience order: rows after, columns tested on."""
    names = cells["experiences"].iloc[0].split(",")
    tests = cells["tests"].iloc[0].split(",")
    values = [[cells[metric_names.accuracy(after, test)].mean() for test in tests] for after in names]
    return pd.DataFrame(values, index=pd.Index(names, name="after"), columns=pd.Index(tests, name="test"))


def matrices(runs: SweepRuns) -> dict[str, pd.DataFrame]:
    """One mean accuracy matrix per strategy (and order), at the largest fraction."""
    last = at_largest_fraction(runs.cells)
    out = {}
    for keys, part in last.groupby(["strategy", *runs.settings], sort=False):
        label = " · ".join(str(k) for k in (keys if isinstance(keys, tuple) else (keys,)))
        out[label] = matrix(part)
    return out


def order_table(runs: SweepRuns) -> pd.DataFrame:
    """Order sensitivity: per order and strategy, the final average accuracy and forgetting (mean ± CI)."""
    columns = {"average accuracy": metric_names.AVERAGE_ACCURACY, "average forgetting": metric_names.AVERAGE_FORGETTING}
    return mean_ci(at_largest_fraction(runs.cells), [ORDER, "strategy"], columns)


def per_type_table(runs: SweepRuns) -> pd.DataFrame:
    """Accuracy per question type on the first test set: after experience 0, then each strategy at the end."""
    cells = runs.cells
    names = runs.experiences
    first, final = names[0], names[-1]
    types = [t for t in QUESTION_TYPES if metric_names.type_accuracy(first, runs.first, t) in cells.columns]
    if not types:
        return pd.DataFrame()
    last = at_largest_fraction(cells)
    table = {BEFORE: {t: cells[metric_names.type_accuracy(first, runs.first, t)].mean() for t in types}}
    for strategy in strategy_order(last):
        rows = last[last["strategy"] == strategy]
        table[strategy] = {t: rows[metric_names.type_accuracy(final, runs.first, t)].mean() for t in types}
    return pd.DataFrame(table).rename_axis("question type")


def film_table(runs: SweepRuns) -> pd.DataFrame:
    """Gamma/beta statistics over all blocks on the first test set: after experience 0, then after the last."""
    cells = runs.cells
    names = runs.experiences
    stats = ["gamma_negative_share", "gamma_near_zero_share", "gamma_mean", "gamma_std", "beta_mean", "beta_std"]
    if metric_names.film(names[0], runs.first, "all", stats[0]) not in cells:
        return pd.DataFrame()
    last = at_largest_fraction(cells)
    rows = {BEFORE: {s: cells[metric_names.film(names[0], runs.first, "all", s)].mean() for s in stats}}
    for strategy in strategy_order(last):
        part = last[last["strategy"] == strategy]
        rows[strategy] = {s: part[metric_names.film(names[-1], runs.first, "all", s)].mean() for s in stats}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def drift_table(runs: SweepRuns) -> pd.DataFrame:
    """Per strategy at the largest fraction: how far the later experiences moved gamma/beta, per block."""
    last = at_largest_fraction(runs.cells)
    prefix = metric_names.film_drift_prefix(runs.first)
    columns = [c for c in last.columns if c.startswith(prefix)]
    if not columns:
        return pd.DataFrame()
    long = last.melt(id_vars=["strategy", "seed"], value_vars=columns, var_name="metric")
    long[["block", "stat"]] = long["metric"].str.removeprefix(prefix).str.split("/", n=1, expand=True)
    table = long.pivot_table(index=["strategy", "block"], columns="stat", values="value", aggfunc="mean")
    order = {s: i for i, s in enumerate(strategy_order(last))}
    table = table.sort_index(level=["strategy", "block"], key=lambda idx: idx.map(lambda v: order.get(v, v)))
    wanted = [
        "gamma_mean_abs_change",
        "beta_mean_abs_change",
        "gamma_flipped",
        "gamma_switched_off",
        "gamma_switched_on",
        "channels",
    ]
    return table[[c for c in wanted if c in table.columns]]


def film_histograms(runs: SweepRuns) -> pd.DataFrame:
    """The gamma/beta histograms after experience 0 and of each strategy at the end, on the first test set."""
    from mlflow import MlflowClient

    client = MlflowClient()
    last = at_largest_fraction(runs.cells)
    first_strategy = last["strategy"].iloc[0]
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in last.itertuples():
            start = row.experiences.split(",")[0]
            try:
                path = client.download_artifacts(row.run_id, "film_histograms.csv", tmp)
            except Exception:  # a run from before gamma/beta statistics existed: leave it out of the figure
                continue
            frame = pd.read_csv(path)
            frame = frame[(frame["test"] == runs.first) & frame["after"].isin([start, row.experiences.split(",")[-1]])]
            frame["model"] = np.where(frame["after"] == start, BEFORE, row.strategy)
            if row.strategy != first_strategy:
                frame = frame[frame["after"] != start]  # the model after experience 0 is every strategy's start
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
