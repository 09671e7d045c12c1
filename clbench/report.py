"""The sweep report: MLflow runs → pandas tables → plots and `summary.md`, also logged to the parent run.

Everything is read back from MLflow (metrics for the numbers, `film_histograms.csv` artifacts for the gamma/beta
distributions), so a report can be rebuilt at any time from the tracking store alone.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clbench import metric_names, plots, tracking
from clbench.data.spec import QUESTION_TYPES
from clbench.errors import ConfigError
from clbench.paths import writable_folder
from clbench.tracking import CELL_TAG, COMMAND_TAG, KIND_TAG, PARENT_TAG

CLEVR, HUMANS = "CLEVR", "CLEVR-Humans"  # the scenario's two experiences, as the runner names them
BEFORE = plots.REFERENCE  # "before fine-tuning": the CLEVR model, the row and line every strategy is compared to


@dataclass
class SweepRuns:
    """A sweep's parent run and one row per finished cell (the latest run of each)."""

    parent_id: str
    experiment: str
    command: str
    cells: pd.DataFrame  # columns: run_id, strategy, fraction, seed, and every metric under its MLflow name
    sweep_metrics: dict[str, float] = field(default_factory=dict)  # the parent's: wall time, experience-0 count


def load_sweep(experiment: str, sweep_id: str | None = None, tracking_uri: str | None = None) -> SweepRuns:
    """The given sweep, or the latest one in `experiment`, with its finished cells."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking.tracking_uri(tracking_uri)
    store = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not store.is_file():  # reading must not create an empty store
        raise ConfigError(
            f"no MLflow store at {store}",
            "run `python -m clbench sweep` here first, or pass the store with --tracking-uri",
        )
    tracking.configure(uri)
    client = MlflowClient()
    if sweep_id is None:
        found = client.get_experiment_by_name(experiment)
        parents = (
            client.search_runs(
                [found.experiment_id],
                filter_string=f"tags.`{KIND_TAG}` = 'sweep'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found
            else []
        )
        if not parents:
            raise ConfigError(
                f"no sweep found in MLflow experiment {experiment!r}",
                "run `python -m clbench sweep` first, or pass --experiment / --tracking-uri of one that has",
            )
        parent = parents[0]
    else:
        try:
            parent = client.get_run(sweep_id)
        except mlflow.exceptions.MlflowException:
            raise ConfigError(f"no run {sweep_id!r} in the tracking store", "pass a sweep's parent run id") from None
    frame = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    )
    if frame.empty:
        raise ConfigError(
            f"sweep {parent.info.run_id} has no finished cells yet", "let the sweep finish, or re-run it to resume"
        )
    frame = frame.drop_duplicates(f"tags.{CELL_TAG}", keep="last")
    cells = pd.DataFrame(
        {
            "run_id": frame["run_id"],
            "strategy": frame["params.strategy"],
            "fraction": frame["params.data.fraction"].astype(float),
            "seed": frame["params.seed"].astype(int),
        }
    )
    metrics = frame.filter(like="metrics.").rename(columns=lambda c: c.removeprefix("metrics."))
    metrics = metrics[sorted(metrics.columns)]  # MLflow returns them in no fixed order; reports must not vary
    cells = pd.concat([cells, metrics], axis=1).sort_values(["strategy", "fraction", "seed"]).reset_index(drop=True)
    command = parent.data.tags.get(COMMAND_TAG, "")
    return SweepRuns(parent.info.run_id, experiment, command, cells, dict(parent.data.metrics))


def _mean_std(frame: pd.DataFrame, by: list[str], columns: dict[str, str]) -> pd.DataFrame:
    """mean, std and n of each column per group, named `<name>_mean`, `<name>_std`, `n`."""
    grouped = frame.groupby(by, sort=True)
    out = pd.concat(
        {name: grouped[column].agg(["mean", "std"]) for name, column in columns.items()},
        axis=1,
    )
    out.columns = [f"{name}_{stat}" for name, stat in out.columns]
    out["n"] = grouped.size()
    return out


def strategy_order(cells: pd.DataFrame) -> list[str]:
    preferred = ["naive", "ewc", "replay", "frozen-generator", "generator-only"]
    present = list(dict.fromkeys(cells["strategy"]))
    return [s for s in preferred if s in present] + [s for s in present if s not in preferred]


def at_largest_fraction(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells fine-tuned on the largest fraction, strategies in report order (so colours match everywhere)."""
    last = cells[cells["fraction"] == cells["fraction"].max()]
    order = {s: i for i, s in enumerate(strategy_order(last))}
    return last.sort_values("strategy", key=lambda column: column.map(order), kind="stable")


def accuracy_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and fraction: accuracy after fine-tuning on both test sets, and before it."""
    return _mean_std(
        cells,
        ["strategy", "fraction"],
        {
            "humans_after": metric_names.accuracy(HUMANS, HUMANS),
            "clevr_after": metric_names.accuracy(HUMANS, CLEVR),
            "humans_before": metric_names.accuracy(CLEVR, HUMANS),
            "clevr_before": metric_names.accuracy(CLEVR, CLEVR),
        },
    )


def forgetting_table(cells: pd.DataFrame) -> pd.DataFrame:
    return _mean_std(
        cells, ["strategy", "fraction"], {"forgetting": metric_names.forgetting(CLEVR), "bwt": metric_names.BWT}
    )


def per_type_table(cells: pd.DataFrame) -> pd.DataFrame:
    """CLEVR accuracy per question type: the CLEVR model (before), then each strategy at the largest fraction."""
    types = [t for t in QUESTION_TYPES if metric_names.type_accuracy(CLEVR, CLEVR, t) in cells.columns]
    last = at_largest_fraction(cells)
    table = {BEFORE: {t: cells[metric_names.type_accuracy(CLEVR, CLEVR, t)].mean() for t in types}}
    for strategy in strategy_order(last):
        rows = last[last["strategy"] == strategy]
        table[strategy] = {t: rows[metric_names.type_accuracy(HUMANS, CLEVR, t)].mean() for t in types}
    return pd.DataFrame(table).rename_axis("question type")


def film_table(cells: pd.DataFrame, test: str = CLEVR) -> pd.DataFrame:
    """Gamma/beta statistics over all blocks: the CLEVR model, then each strategy after fine-tuning."""
    last = at_largest_fraction(cells)
    stats = ["gamma_negative_share", "gamma_near_zero_share", "gamma_mean", "gamma_std", "beta_mean", "beta_std"]
    rows = {BEFORE: {s: cells[metric_names.film(CLEVR, test, "all", s)].mean() for s in stats}}
    for strategy in strategy_order(last):
        part = last[last["strategy"] == strategy]
        rows[strategy] = {s: part[metric_names.film(HUMANS, test, "all", s)].mean() for s in stats}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def drift_table(cells: pd.DataFrame, test: str = CLEVR) -> pd.DataFrame:
    """Per strategy at the largest fraction: how far fine-tuning moved gamma/beta, per block (mean over seeds)."""
    last = at_largest_fraction(cells)
    prefix = metric_names.film_drift_prefix(test)
    columns = [c for c in last.columns if c.startswith(prefix)]
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


def film_histograms(cells: pd.DataFrame) -> pd.DataFrame:
    """The gamma/beta histograms of the CLEVR model and of each strategy at the largest fraction, from artifacts."""
    from mlflow import MlflowClient

    client = MlflowClient()
    last = at_largest_fraction(cells)
    first = last["strategy"].iloc[0]
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in last.itertuples():
            try:
                path = client.download_artifacts(row.run_id, "film_histograms.csv", tmp)
            except Exception:  # a run from before gamma/beta statistics existed: leave it out of the figure
                continue
            frame = pd.read_csv(path)
            frame = frame[frame["test"] == CLEVR]
            frame["model"] = np.where(frame["after"] == CLEVR, BEFORE, row.strategy)
            if row.strategy != first:
                frame = frame[frame["after"] != CLEVR]  # the CLEVR model is the same for every strategy of a seed
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- figures -------------------------------------------------------------------------------------------------


def _band(ax, x, mean, std, label: str, **style) -> None:
    line = ax.plot(x, mean, marker="o", ms=3, label=label, **style)[0]
    ax.fill_between(x, mean - std.fillna(0), mean + std.fillna(0), color=line.get_color(), alpha=0.15)


def accuracy_figure(table: pd.DataFrame, cells: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2, sharex=True)
    for strategy in strategy_order(cells):
        part = table.loc[strategy]
        _band(left, part.index, part["humans_after_mean"], part["humans_after_std"], strategy)
        _band(right, part.index, part["clevr_after_mean"], part["clevr_after_std"], strategy)
    before = table[["humans_before_mean", "clevr_before_mean"]].mean()
    baseline = {name: cells[f"majority_baseline/{name}"].mean() for name in (HUMANS, CLEVR)}
    for ax, name, key in ((left, HUMANS, "humans_before_mean"), (right, CLEVR, "clevr_before_mean")):
        ax.axhline(before[key], color="black", ls="--", lw=1, label="CLEVR model, before fine-tuning")
        ax.axhline(baseline[name], color="grey", ls=":", lw=1, label="majority answer")
        ax.set_xlabel("fraction of CLEVR-Humans train used for fine-tuning")
        ax.set_ylabel(f"{name} test accuracy" if name == HUMANS else f"{name} val accuracy")
        ax.grid(alpha=0.3)
    left.set_title("Learning CLEVR-Humans (the paper's Figure 9)", fontsize=10)
    right.set_title("Remembering CLEVR", fontsize=10)
    right.legend(fontsize=7, loc="lower left")
    figure.suptitle("mean ± std across seeds", fontsize=9)
    return figure


def forgetting_figure(table: pd.DataFrame, cells: pd.DataFrame) -> Figure:
    strategies = strategy_order(cells)
    fractions = sorted(cells["fraction"].unique())
    figure = Figure(figsize=(10, 4))
    ax = figure.subplots()
    width = 0.8 / len(fractions)
    for k, fraction in enumerate(fractions):
        rows = [table.loc[(s, fraction)] if (s, fraction) in table.index else None for s in strategies]
        mean = [100 * r["forgetting_mean"] if r is not None else np.nan for r in rows]
        std = [100 * r["forgetting_std"] if r is not None else np.nan for r in rows]
        x = np.arange(len(strategies)) + (k - (len(fractions) - 1) / 2) * width
        ax.bar(x, mean, width, yerr=np.nan_to_num(std), capsize=2, label=f"{fraction:g}")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(strategies)), strategies)
    ax.set_ylabel("CLEVR forgetting (accuracy points)")
    ax.legend(title="fraction", fontsize=8, title_fontsize=8)
    ax.set_title("Catastrophic forgetting of CLEVR after fine-tuning on CLEVR-Humans (mean ± std)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return figure


def per_type_figure(table: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(10, 4))
    ax = figure.subplots()
    width = 0.8 / len(table.columns)
    x = np.arange(len(table.index))
    for k, column in enumerate(table.columns):
        colour = "0.35" if k == 0 else f"C{k - 1}"  # before fine-tuning in grey, strategies as in the other plots
        ax.bar(x + (k - (len(table.columns) - 1) / 2) * width, 100 * table[column], width, label=column, color=colour)
    ax.set_xticks(x, table.index)
    ax.set_ylabel("CLEVR val accuracy (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Per question type, before fine-tuning and after it (largest fraction, mean over seeds)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return figure


# --- writing -------------------------------------------------------------------------------------------------


def _pm(table: pd.DataFrame, name: str, scale: float = 100.0) -> pd.Series:
    """`mean ± std` strings (std 0 where a group has one seed)."""
    mean, std = scale * table[f"{name}_mean"], scale * table[f"{name}_std"].fillna(0)
    return mean.map("{:.1f}".format) + " ± " + std.map("{:.1f}".format)


def build_report(runs: SweepRuns, out: Path, report_command: str = "") -> list[Path]:
    """Write tables, figures and summary.md into `out` (all or nothing) and log them to the parent run."""
    from mlflow import MlflowClient

    cells = runs.cells
    accuracy = accuracy_table(cells)
    forgetting = forgetting_table(cells)
    per_type = per_type_table(cells)
    film = film_table(cells)
    drift = drift_table(cells)
    histograms = film_histograms(cells)

    writable_folder(out, "--out")
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        cells.filter(regex=r"^(run_id|strategy|fraction|seed|accuracy/|forgetting/|bwt$)").to_csv(
            staging / "cells.csv", index=False
        )
        accuracy.to_csv(staging / "accuracy_vs_fraction.csv")
        forgetting.to_csv(staging / "forgetting.csv")
        per_type.to_csv(staging / "per_type_accuracy.csv")
        film.to_csv(staging / "gamma_beta.csv")
        drift.to_csv(staging / "gamma_beta_drift.csv")
        plots.save(accuracy_figure(accuracy, cells), staging / "accuracy_vs_fraction.png")
        plots.save(forgetting_figure(forgetting, cells), staging / "forgetting.png")
        plots.save(per_type_figure(per_type), staging / "per_type_accuracy.png")
        if not histograms.empty:
            title = "FiLM parameters over CLEVR val (the paper's Figure 5): the CLEVR model and after fine-tuning"
            plots.save(plots.gamma_beta(histograms, hue="model", title=title), staging / "gamma_beta.png")
        (staging / "summary.md").write_text(
            summary_markdown(runs, accuracy, forgetting, per_type, film, drift, report_command)
        )
        written = []
        for path in sorted(staging.iterdir()):
            target = out / path.name
            path.replace(target)
            written.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    client = MlflowClient()
    for path in written:
        client.log_artifact(runs.parent_id, str(path), "report")
    return written


def summary_markdown(
    runs: SweepRuns,
    accuracy: pd.DataFrame,
    forgetting: pd.DataFrame,
    per_type: pd.DataFrame,
    film: pd.DataFrame,
    drift: pd.DataFrame,
    report_command: str,
) -> str:
    cells = runs.cells
    largest = cells["fraction"].max()
    seeds = sorted(cells["seed"].unique())
    headline = pd.DataFrame(
        {
            "CLEVR-Humans after (%)": _pm(accuracy, "humans_after"),
            "CLEVR after (%)": _pm(accuracy, "clevr_after"),
            "forgetting (pts)": _pm(forgetting, "forgetting"),
            "BWT (pts)": _pm(forgetting, "bwt"),
        }
    ).xs(largest, level="fraction")
    headline = headline.loc[[s for s in strategy_order(cells) if s in headline.index]]
    by_fraction = _pm(accuracy, "humans_after").unstack("fraction")
    by_fraction = by_fraction.loc[[s for s in strategy_order(cells) if s in by_fraction.index]]
    by_fraction.columns = [f"{f:g}" for f in by_fraction.columns]
    forget_by_fraction = _pm(forgetting, "forgetting").unstack("fraction")
    forget_by_fraction = forget_by_fraction.loc[by_fraction.index]
    forget_by_fraction.columns = by_fraction.columns
    before = accuracy[["clevr_before_mean", "humans_before_mean"]].mean()
    baseline = {name: cells[f"majority_baseline/{name}"].mean() for name in (CLEVR, HUMANS)}
    drift_all = drift.xs("all", level="block") if "all" in drift.index.get_level_values("block") else drift
    lines = [
        "# clbench sweep report",
        "",
        f"{len(cells)} finished cells: {cells['strategy'].nunique()} strategies × "
        f"{cells['fraction'].nunique()} fractions × {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
        f"MLflow experiment `{runs.experiment}`, parent run `{runs.parent_id}`.",
        "",
    ]
    if runs.command:
        lines += ["Produced by:", "", "```", runs.command, *([report_command] if report_command else []), "```", ""]
    timing = runs.sweep_metrics
    if "sweep/wall_time_s" in timing:
        lines += [
            f"Its last invocation ran {timing.get('sweep/cells_run', 0):.0f} cells in "
            f"{timing['sweep/wall_time_s'] / 60:.1f} min and trained experience 0 "
            f"{timing.get('sweep/experience0_trained', 0):.0f} times (once per seed; every other cell started "
            "from the cached CLEVR model).",
            "",
        ]
    lines += [
        "## Before fine-tuning (the CLEVR model, experience 0)",
        "",
        f"CLEVR val {100 * before['clevr_before_mean']:.1f} % (majority answer {100 * baseline[CLEVR]:.1f} %), "
        f"CLEVR-Humans test {100 * before['humans_before_mean']:.1f} % "
        f"(majority answer {100 * baseline[HUMANS]:.1f} %).",
        "",
        f"## After fine-tuning on a fraction {largest:g} of CLEVR-Humans train (mean ± std across seeds)",
        "",
        headline.to_markdown(),
        "",
        "## CLEVR-Humans test accuracy (%) against the fraction used for fine-tuning",
        "",
        "![accuracy vs fraction](accuracy_vs_fraction.png)",
        "",
        by_fraction.to_markdown(),
        "",
        "## Forgetting of CLEVR (accuracy points) against the fraction",
        "",
        "![forgetting](forgetting.png)",
        "",
        forget_by_fraction.to_markdown(),
        "",
        "## CLEVR accuracy per question type (%)",
        "",
        "![per type](per_type_accuracy.png)",
        "",
        (100 * per_type).round(1).to_markdown(),
        "",
        "## FiLM's (γ, β) over CLEVR val",
        "",
        "![gamma beta](gamma_beta.png)",
        "",
        film.round(3).to_markdown(),
        "",
        "How far fine-tuning moved them (all blocks; per block in `gamma_beta_drift.csv`):",
        "",
        drift_all.round(3).to_markdown(),
        "",
    ]
    return "\n".join(lines)
