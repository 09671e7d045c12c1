"""The report's measures beyond accuracy and forgetting: transfer, flips, the stability gap, and which strategy
differences are real.

Tables are per strategy (and setting) at the largest fraction, mean with a 95 % t-interval across seeds; the
comparison with naive fine-tuning pairs cells by seed and tests the difference (`measures.PAIRED_TEST`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clbench.evaluation import measures
from clbench.evaluation import names as metric_names
from clbench.report import figures as plots

MEASURES = {
    "learning accuracy": metric_names.LEARNING_ACCURACY,
    "normalised forgetting": metric_names.NORMALISED_FORGETTING,
    "negative flips": metric_names.NEGATIVE_FLIPS,
    "positive flips": metric_names.POSITIVE_FLIPS,
    "forward transfer": metric_names.FORWARD_TRANSFER,
    "intransigence": metric_names.INTRANSIGENCE,
    "stability gap": "stability_gap",  # per cell: the mean over its continual-evaluation curves
    "recovery (iterations)": "recovery_iterations",
    "min-ACC": metric_names.MIN_ACC,
    "WC-ACC": metric_names.WC_ACC,
}
POINTS = {"learning accuracy", "negative flips", "positive flips", "forward transfer", "intransigence"}
POINTS |= {"stability gap", "min-ACC", "WC-ACC"}  # shown ×100 (points or %); the others as they are

_COMPARED = {"forgetting": metric_names.AVERAGE_FORGETTING, "new-task accuracy": "new_task_accuracy"}
_BASELINE = "naive"


def with_derived(cells: pd.DataFrame, last_test: str) -> pd.DataFrame:
    """The cells with the per-cell columns the tables need: curve means and the last test set's accuracy."""
    cells = cells.copy()
    for stat in ("stability_gap", "recovery_iterations"):
        columns = [c for c in cells.columns if c.startswith(metric_names.continual_measure_prefix(stat))]
        cells[stat] = cells[columns].mean(axis=1) if columns else np.nan
    cells["new_task_accuracy"] = cells.get(metric_names.final_accuracy(last_test), np.nan)
    return cells


def mean_ci(frame: pd.DataFrame, by: list[str], columns: dict[str, str]) -> pd.DataFrame:
    """mean, std, 95 % t-interval half-width and n of each column per group: `<name>_mean|_std|_ci`, `n`."""
    grouped = frame.groupby(by, sort=True)
    parts = {}
    for name, column in columns.items():
        if column in frame:
            stats = grouped[column].agg(["mean", "std", "count"])
            stats["ci"] = measures.t_half_width(stats["std"], stats["count"])
            parts[name] = stats[["mean", "std", "ci"]]
    out = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=grouped.size().index)
    out.columns = [f"{name}_{stat}" for name, stat in out.columns]
    out["n"] = grouped.size()
    return out


def measures_table(cells: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    present = {name: column for name, column in MEASURES.items() if column in cells and cells[column].notna().any()}
    return mean_ci(cells, by, present)


def comparison_table(cells: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """Every strategy against naive fine-tuning with the same settings, cells paired by seed: the mean
    difference, its 95 % t-interval, the paired t-test's p-value and whether it is significant."""
    if _BASELINE not in set(cells["strategy"]):
        return pd.DataFrame()
    rows = {}
    groups = cells.groupby(settings, sort=False) if settings else [((), cells)]
    for keys, part in groups:
        keys = keys if isinstance(keys, tuple) else (keys,)
        base = part[part["strategy"] == _BASELINE].set_index("seed")
        for strategy, other in part[part["strategy"] != _BASELINE].groupby("strategy", sort=False):
            other = other.set_index("seed")
            seeds = sorted(set(base.index) & set(other.index))
            row: dict[str, Any] = {}
            for name, column in _COMPARED.items():
                if column not in part:
                    continue
                result = measures.paired_difference(other.loc[seeds, column].tolist(), base.loc[seeds, column].tolist())
                row |= {f"{name}_{k}": v for k, v in result.items()}
            rows[(strategy, *keys)] = row
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["strategy", *settings])
    return table


def comparison_markdown(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as text: Δ ± CI in points, the p-value, and whether the paired test finds a difference."""
    out = pd.DataFrame(index=table.index)
    for name in _COMPARED:
        if f"{name}_difference" not in table:
            continue
        diff, ci = 100 * table[f"{name}_difference"], 100 * table[f"{name}_ci"]
        text = diff.map("{:+.1f}".format) + (" ± " + ci.map("{:.1f}".format)).where(ci.notna(), "")
        out[f"Δ {name} (pts)"] = text.where(diff.notna(), "–")
        out[f"p ({name})"] = table[f"{name}_p"].map(_p_value)
        out[f"differs ({name})"] = np.where(table[f"{name}_significant"], "yes", "no")
    first = next(iter(_COMPARED))
    if f"{first}_n" in table:
        out["seeds"] = table[f"{first}_n"]
    return out


def _p_value(p: float) -> str:
    """Three decimals, or a bound where those would read as a p of zero."""
    return "–" if p != p else "< 0.001" if p < 0.001 else f"{p:.3f}"


def auc_table(cells: pd.DataFrame, settings: list[str], fraction: str, last_test: str) -> pd.DataFrame:
    """Per strategy and setting: the area under new-task accuracy against the fraction (each seed's curve, then
    mean and interval across seeds)."""
    column = metric_names.final_accuracy(last_test)
    per_seed = (
        cells.groupby(["strategy", *settings, "seed"], sort=False)
        .apply(lambda part: measures.area_under_curve(part[fraction].tolist(), part[column].tolist()))
        .rename("auc")
        .reset_index()
    )
    return mean_ci(per_seed, ["strategy", *settings], {"area under the curve": "auc"})


def type_forgetting_table(cells: pd.DataFrame, first_test: str, order: list[str]) -> pd.DataFrame:
    """Mean forgetting per question type on the first test set: strategies × types."""
    prefix = metric_names.type_forgetting(first_test, "")
    columns = [c for c in cells.columns if c.startswith(prefix)]
    if not columns:
        return pd.DataFrame()
    table = cells.groupby("strategy")[columns].mean().rename(columns=lambda c: c.removeprefix(prefix))
    return table.reindex([s for s in order if s in table.index]).rename_axis("strategy")


def continual_frame(cells: pd.DataFrame, during: str, test: str) -> pd.DataFrame:
    """The continual-evaluation curves of the cells, read back from MLflow: strategy, seed, iteration, accuracy."""
    from mlflow import MlflowClient

    client = MlflowClient()
    name = metric_names.continual(during, test)
    rows = []
    for cell in cells.itertuples():
        points = {m.step: m.value for m in client.get_metric_history(cell.run_id, name)}  # a repeated step: once
        rows += [(cell.strategy, cell.seed, step, value) for step, value in sorted(points.items())]
    return pd.DataFrame(rows, columns=["strategy", "seed", "iteration", "accuracy"])


def continual_curves_figure(frame: pd.DataFrame, during: str, test: str) -> Figure:
    """Old-task accuracy during the last experience, one line per strategy: mean and 95 % interval over seeds
    (drawn within [0, 1], where accuracies live)."""
    stats = frame.groupby(["strategy", "iteration"], sort=False)["accuracy"].agg(["mean", "std", "count"])
    half = measures.t_half_width(stats["std"], stats["count"])
    curves = pd.DataFrame(
        {"accuracy": stats["mean"], "low": (stats["mean"] - half).clip(0, 1), "high": (stats["mean"] + half).clip(0, 1)}
    ).reset_index()
    title = f"{test} accuracy while {during} trains (fixed subset), mean and 95 % CI across seeds"
    return plots.continual_curves(curves, "strategy", title, ylabel=f"{test} accuracy (%)")


def type_forgetting_figure(table: pd.DataFrame, test: str) -> Figure:
    """Heatmap of forgetting per question type (rows: strategies), red where forgotten, blue where improved."""
    values = 100 * table.to_numpy(dtype=float)
    limit = max(float(np.nanmax(np.abs(values))) if values.size else 1.0, 1.0)
    figure = Figure(figsize=(1.6 + 1.1 * len(table.columns), 1.2 + 0.35 * len(table)), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if value == value:
            colour = "white" if abs(value) > 0.6 * limit else "black"
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(table.index)), table.index, fontsize=8)
    figure.colorbar(image, ax=ax, label="forgetting (points)")
    ax.set_title(f"{test} forgetting per question type, mean across seeds", fontsize=10)
    return figure
