"""A sweep's figures: accuracy against the fine-tuning fraction (the FiLM paper's Figure 9), stability against
plasticity, forgetting, per-type accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clbench.evaluation import names as metric_names
from clbench.report.runs import FRACTION, SweepRuns, in_strategy_order, strategy_order


def _band(ax, x, mean, half, label: str, **style) -> None:
    line = ax.plot(x, mean, marker="o", ms=3, label=label, **style)[0]
    ax.fill_between(x, mean - half.fillna(0), mean + half.fillna(0), color=line.get_color(), alpha=0.15)


def accuracy_figure(runs: SweepRuns, table: pd.DataFrame, references: dict[str, dict[str, float]]) -> Figure:
    """Accuracy on the new data (the paper's Figure 9) and retained accuracy on the old, against the fraction."""
    first, last = runs.first, runs.last
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2, sharex=True)
    for keys, part in table.groupby(level=list(range(table.index.nlevels - 1)), sort=False):
        label = " · ".join(str(k) for k in (keys if isinstance(keys, tuple) else (keys,)))
        part = part.droplevel(list(range(table.index.nlevels - 1)))
        _band(left, part.index, part["new_after_mean"], part["new_after_ci"], label)
        _band(right, part.index, part["old_after_mean"], part["old_after_ci"], label)
    before = table[["new_before_mean", "old_before_mean"]].mean()
    for ax, test, key in ((left, last, "new_before_mean"), (right, first, "old_before_mean")):
        ax.axhline(before[key], color="black", ls="--", lw=1, label=f"after {first} only, before fine-tuning")
        baseline = metric_names.majority_baseline(test)
        if baseline in runs.cells:
            ax.axhline(runs.cells[baseline].mean(), color="grey", ls=":", lw=1, label="majority answer")
        for k, (name, levels) in enumerate(references.items()):
            if test in levels:
                ax.axhline(levels[test], color=f"C{7 + k}", ls="-.", lw=1, label=name)
        ax.set_xlabel(f"fraction of {last} fine-tuning data")
        ax.set_ylabel(f"{test} test accuracy")
        ax.grid(alpha=0.3)
    left.set_title(f"Learning {last} (the paper's Figure 9)", fontsize=10)
    right.set_title(f"Remembering {first}", fontsize=10)
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle("mean ± 95 % CI across seeds (t-distribution)", fontsize=9)
    return figure


def stability_plasticity_figure(runs: SweepRuns, final: pd.DataFrame) -> Figure:
    """The stability–plasticity frontier: one point per strategy, accuracy on the last experience's test set
    against average forgetting, with 95 % t-intervals across seeds on both."""
    figure = Figure(figsize=(7, 5))
    ax = figure.subplots()
    new, old = f"final {runs.last}", "average forgetting"
    final = in_strategy_order(final, strategy_order(runs.cells))
    for k, (key, row) in enumerate(final.iterrows()):  # colours in report order, as in the other figures
        label = " · ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        x, y = 100 * row[f"{new}_mean"], 100 * row[f"{old}_mean"]
        if np.isnan(y):  # trained offline: no sequence, no forgetting; its accuracy is the reference
            ax.axvline(x, color="grey", ls="--", lw=1)
            ax.annotate(f"{label} (offline)", (x, 0), xytext=(3, 3), textcoords="offset points", fontsize=7)
            continue
        xerr, yerr = 100 * np.nan_to_num(row[f"{new}_ci"]), 100 * np.nan_to_num(row[f"{old}_ci"])
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=4, capsize=2, color=f"C{k % 10}")
        ax.annotate(label, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel(f"{runs.last} accuracy at the end (%)  → more plastic")
    ax.set_ylabel("average forgetting (points)  ↓ more stable")
    ax.set_title("Stability against plasticity, mean ± 95 % CI across seeds", fontsize=10)
    ax.grid(alpha=0.3)
    return figure


def forgetting_figure(runs: SweepRuns, table: pd.DataFrame) -> Figure:
    """Bars of forgetting: per strategy and fraction (two experiences), or per earlier experience (more)."""
    frame = table.reset_index()
    frame["label"] = frame[["strategy", *runs.settings]].astype(str).agg(" · ".join, axis=1)
    labels = list(dict.fromkeys(frame["label"]))
    if FRACTION in frame and len(runs.tests) == 2:
        groups = [(f"{f:g}", frame[frame[FRACTION] == f], runs.first) for f in sorted(frame[FRACTION].unique())]
        legend, what = "fraction", f"{runs.first} forgetting (accuracy points)"
    else:
        frame = frame[frame[FRACTION] == frame[FRACTION].max()] if FRACTION in frame else frame
        groups = [(t, frame, t) for t in runs.forgettable]
        legend, what = "tested on", "forgetting (accuracy points)"
    figure = Figure(figsize=(max(8, 1.2 * len(labels) * max(1, len(groups)) / 3), 4))
    ax = figure.subplots()
    width = 0.8 / len(groups)
    for k, (name, part, test) in enumerate(groups):
        rows = part.set_index("label").reindex(labels)
        mean, half = 100 * rows[f"{test}_mean"], 100 * rows[f"{test}_ci"].fillna(0)
        x = np.arange(len(labels)) + (k - (len(groups) - 1) / 2) * width
        ax.bar(x, mean, width, yerr=half.to_numpy(), capsize=2, label=name)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=20 if len(labels) > 6 else 0, fontsize=8)
    ax.set_ylabel(what)
    ax.legend(title=legend, fontsize=8, title_fontsize=8)
    ax.set_title(f"Forgetting after the last experience ({runs.last}), mean ± 95 % CI across seeds", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return figure


def per_type_figure(table: pd.DataFrame, test: str) -> Figure:
    figure = Figure(figsize=(10, 4))
    ax = figure.subplots()
    width = 0.8 / len(table.columns)
    x = np.arange(len(table.index))
    for k, column in enumerate(table.columns):
        colour = "0.35" if k == 0 else f"C{k - 1}"  # before fine-tuning in grey, strategies as in the other plots
        ax.bar(x + (k - (len(table.columns) - 1) / 2) * width, 100 * table[column], width, label=column, color=colour)
    ax.set_xticks(x, table.index)
    ax.set_ylabel(f"{test} accuracy (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Per question type, before the later experiences and after them (mean over seeds)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return figure
