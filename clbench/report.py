"""The sweep report: MLflow runs → pandas tables → plots and `summary.md`, also logged to the parent run.

Everything is read back from MLflow (metrics for the numbers, `film_histograms.csv` artifacts for the gamma/beta
distributions), so a report can be rebuilt at any time from the tracking store alone.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clbench import measures, metric_names, plots, tracking
from clbench import report_measures as rm
from clbench.data.spec import QUESTION_TYPES
from clbench.errors import ConfigError
from clbench.paths import writable_folder
from clbench.report_measures import mean_ci
from clbench.tracking import CELL_TAG, COMMAND_TAG, KIND_TAG, PARENT_TAG

BEFORE = plots.REFERENCE  # "before fine-tuning": the model after experience 0, which every strategy starts from
FRACTION = "scenario.fraction"
ORDER = "scenario.order"


@dataclass
class SweepRuns:
    """A sweep's parent run and one row per finished cell (the latest run of each)."""

    parent_id: str
    experiment: str
    command: str
    cells: pd.DataFrame  # run_id, strategy, seed, experiences, tests, each grid axis, then every metric
    sweep_metrics: dict[str, float] = field(default_factory=dict)  # the parent's: wall time, experience-0 count
    axes: list[str] = field(default_factory=list)  # the grid's axes besides strategy and seed

    @property
    def experiences(self) -> list[str]:
        """The first cell's experience names, in its order."""
        return self.cells["experiences"].iloc[0].split(",")

    @property
    def tests(self) -> list[str]:
        return self.cells["tests"].iloc[0].split(",")

    @property
    def first(self) -> str:
        """The first experience's test set: what later experiences may make the model forget."""
        return self.tests[0]

    @property
    def last(self) -> str:
        return self.tests[-1]

    @property
    def forgettable(self) -> list[str]:
        """Test sets with a forgetting figure: an earlier experience's, in any cell's order."""
        return [t for t in self.tests if metric_names.forgetting(t) in self.cells]

    def first_order(self) -> SweepRuns:
        """The cells that share the first cell's experience order: tables about "the first experience" and "the
        end" (per type, γ/β) compare like with like when the grid holds several orders."""
        same = self.cells["experiences"] == self.cells["experiences"].iloc[0]
        return replace(self, cells=self.cells[same].reset_index(drop=True))

    @property
    def settings(self) -> list[str]:
        """The axes a headline row is per (all but the fraction, whose largest value the headline shows)."""
        return [axis for axis in self.axes if axis != FRACTION]


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
                "run `python -m clbench sweep` first, or pass the --scenario, --experiment or --tracking-uri of one",
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
    axes = [k.removeprefix("sweep.grid.") for k in sorted(parent.data.params) if k.startswith("sweep.grid.")]
    cells = pd.DataFrame(
        {
            "run_id": frame["run_id"],
            "strategy": frame["params.strategy"],
            "seed": frame["params.seed"].astype(int),
            "experiences": frame["params.scenario.experiences"],
            "tests": frame["params.scenario.tests"],
        }
    )
    for axis in axes:
        column = frame[_param_column(frame, axis)]
        cells[axis] = column.astype(float) if axis == FRACTION else column
    metrics = frame.filter(like="metrics.").rename(columns=lambda c: c.removeprefix("metrics."))
    # An offline run (joint) has one row of the accuracy matrix and nothing to forget (older runs logged 0).
    rows = metrics.filter(regex="^accuracy/after_").notna().sum(axis=1)
    one_row = rows == metrics.filter(regex="^final_accuracy/").notna().sum(axis=1)
    summaries = [c for c in (metric_names.AVERAGE_FORGETTING, metric_names.BWT) if c in metrics]
    metrics.loc[one_row, summaries] = np.nan
    metrics = metrics[sorted(metrics.columns)]  # MLflow returns them in no fixed order; reports must not vary
    cells = pd.concat([cells, metrics], axis=1).sort_values(["strategy", *axes, "seed"]).reset_index(drop=True)
    command = parent.data.tags.get(COMMAND_TAG, "")
    return SweepRuns(parent.info.run_id, experiment, command, cells, dict(parent.data.metrics), axes)


def _param_column(frame: pd.DataFrame, axis: str) -> str:
    """A grid axis's MLflow param: config fields and scenario parameters by name, strategy ones as strategy.X."""
    for name in (f"params.{axis}", f"params.strategy.{axis}"):
        if name in frame.columns:
            return name
    raise ConfigError(f"the sweep's runs have no param {axis!r}", "re-run the sweep with this version of clbench")


def strategy_order(cells: pd.DataFrame) -> list[str]:
    """The lower bound, regularisers, rehearsal, FiLM's own, then the references; others after."""
    preferred = [
        *("naive", "ewc", "si", "mas", "rwalk", "lwf"),
        *("replay", "gem", "agem", "der", "er-ace", "mir", "gdumb"),
        *("frozen-generator", "generator-only", "cumulative", "joint"),
    ]
    present = list(dict.fromkeys(cells["strategy"]))
    return [s for s in preferred if s in present] + [s for s in present if s not in preferred]


def at_largest_fraction(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells fine-tuned on the largest fraction (all cells without one), strategies in report order."""
    last = cells[cells[FRACTION] == cells[FRACTION].max()] if FRACTION in cells else cells
    order = {s: i for i, s in enumerate(strategy_order(last))}
    return last.sort_values("strategy", key=lambda column: column.map(order), kind="stable")


def final_table(runs: SweepRuns) -> pd.DataFrame:
    """Per strategy and setting, at the largest fraction: final accuracy on every test set, and the summaries."""
    columns = {f"final {t}": metric_names.final_accuracy(t) for t in runs.tests}
    columns |= {
        "average accuracy": metric_names.AVERAGE_ACCURACY,
        "average forgetting": metric_names.AVERAGE_FORGETTING,
        "bwt": metric_names.BWT,
    }
    return mean_ci(at_largest_fraction(runs.cells), ["strategy", *runs.settings], columns)


COST = {
    "train time (s)": metric_names.TRAIN_TIME,
    "wall time (s)": metric_names.WALL_TIME,
    "strategy memory (MB)": metric_names.HELD_BYTES,
    "stored questions": metric_names.HELD_QUESTIONS,
    "peak RSS (MB)": metric_names.PEAK_RSS,
}


def cost_table(runs: SweepRuns) -> pd.DataFrame:
    """Per strategy and setting, at the largest fraction: what a run cost (sweeps from before costs were logged:
    wall time only)."""
    return mean_ci(at_largest_fraction(runs.cells), ["strategy", *runs.settings], COST)


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


# --- figures -------------------------------------------------------------------------------------------------


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
    rank = {strategy: i for i, strategy in enumerate(strategy_order(runs.cells))}
    final = final.iloc[np.argsort([rank.get(_first(k), len(rank)) for k in final.index], kind="stable")]
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


# --- writing -------------------------------------------------------------------------------------------------


def _pm(table: pd.DataFrame, name: str, scale: float = 100.0, digits: int = 1) -> pd.Series:
    """`mean ± half-width of the 95 % t-interval` strings (the mean alone where a group has one seed; – where it
    has no value)."""
    mean, ci = scale * table[f"{name}_mean"], scale * table[f"{name}_ci"]
    number = f"{{:.{digits}f}}".format
    text = mean.map(number) + (" ± " + ci.map(number)).where(ci.notna(), "")
    return text.where(mean.notna(), "–")


def _markdown(table: pd.DataFrame, order: list[str], **options: Any) -> str:
    """A table in strategy order, its (strategy, setting) rows labelled `strategy · setting`."""
    rank = {strategy: i for i, strategy in enumerate(order)}
    table = table.iloc[np.argsort([rank.get(_first(k), len(rank)) for k in table.index], kind="stable")]
    if isinstance(table.index, pd.MultiIndex):
        table = table.set_axis([" · ".join(map(str, k)) for k in table.index])
    return table.to_markdown(**options)


@dataclass
class _Report:
    """Every table of a report, and the figures drawn from them (file name → figure)."""

    final: pd.DataFrame
    forgetting: pd.DataFrame
    matrices: dict[str, pd.DataFrame]
    accuracy: pd.DataFrame | None = None  # a fraction grid only
    orders: pd.DataFrame | None = None  # several orders only
    per_type: pd.DataFrame = field(default_factory=pd.DataFrame)
    cost: pd.DataFrame = field(default_factory=pd.DataFrame)
    film: pd.DataFrame = field(default_factory=pd.DataFrame)
    drift: pd.DataFrame = field(default_factory=pd.DataFrame)
    measures: pd.DataFrame = field(default_factory=pd.DataFrame)  # clbench.measures per strategy, mean ± CI
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)  # each strategy against naive, paired by seed
    auc: pd.DataFrame = field(default_factory=pd.DataFrame)  # a fraction grid only
    type_forgetting: pd.DataFrame = field(default_factory=pd.DataFrame)
    continual: pd.DataFrame = field(default_factory=pd.DataFrame)  # every cell's curve during the last experience
    figures: dict[str, Figure] = field(default_factory=dict)


def _tables(runs: SweepRuns, references: dict[str, dict[str, float]]) -> _Report:
    fractions = runs.cells[FRACTION].nunique() if FRACTION in runs.cells else 0
    report = _Report(final_table(runs), forgetting_table(runs), matrices(runs), cost=cost_table(runs))
    primary = runs.first_order()
    report.per_type, report.film, report.drift = per_type_table(primary), film_table(primary), drift_table(primary)
    _measures(runs, report)
    if fractions > 1:
        report.accuracy = accuracy_table(runs)
        report.figures["accuracy_vs_fraction.png"] = accuracy_figure(runs, report.accuracy, references)
        report.auc = rm.auc_table(runs.cells, runs.settings, FRACTION, runs.last)
    if ORDER in runs.axes and runs.cells[ORDER].nunique() > 1:
        report.orders = order_table(runs)
    report.figures["forgetting.png"] = forgetting_figure(runs, report.forgetting)
    if runs.cells["strategy"].nunique() > 1 and runs.forgettable:
        report.figures["stability_plasticity.png"] = stability_plasticity_figure(runs, report.final)
    report.figures["accuracy_matrix.png"] = plots.accuracy_matrices(report.matrices)
    if not report.per_type.empty:
        report.figures["per_type_accuracy.png"] = per_type_figure(report.per_type, primary.first)
    return report


def _measures(runs: SweepRuns, report: _Report) -> None:
    """The measures of clbench.measures per strategy, the comparison with naive, and their figures."""
    order = strategy_order(runs.cells)
    last = rm.with_derived(at_largest_fraction(runs.cells), runs.last)
    report.measures = rm.measures_table(last, ["strategy", *runs.settings])
    report.comparison = rm.comparison_table(last, runs.settings)
    primary = runs.first_order()
    primary_last = at_largest_fraction(primary.cells)
    report.type_forgetting = rm.type_forgetting_table(primary_last, primary.first, order)
    if not report.type_forgetting.empty:
        figure = rm.type_forgetting_figure(report.type_forgetting, primary.first)
        report.figures["type_forgetting.png"] = figure
    during, test = primary.experiences[-1], primary.first
    if metric_names.continual(during, test) in primary.cells:
        report.continual = rm.continual_frame(primary_last, during, test)
        if not report.continual.empty:
            report.figures["continual_eval.png"] = rm.continual_curves_figure(report.continual, during, test)


def build_report(runs: SweepRuns, out: Path, scenario: Any = None, report_command: str = "") -> list[Path]:
    """Write tables, figures and summary.md into `out` (all or nothing) and log them to the parent run.

    `scenario` (its class) brings the reference levels drawn in the fraction figure, such as the paper's.
    """
    from mlflow import MlflowClient

    references = dict(getattr(scenario, "references", {}) or {})
    report = _tables(runs, references)
    histograms = film_histograms(runs.first_order())
    writable_folder(out, "--out")
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        keep = r"^(run_id|strategy|seed|scenario\.|accuracy/|forgetting/|average_|bwt($|/)|cost/|wall_time_s$"
        keep += r"|learning_accuracy|normalised_forgetting|forward_transfer|intransigence|.*_flip_rate|continual)"
        runs.cells.filter(regex=keep).to_csv(staging / "cells.csv", index=False)
        report.final.to_csv(staging / "final.csv")
        report.forgetting.to_csv(staging / "forgetting.csv")
        report.cost.to_csv(staging / "cost.csv")
        pd.concat(report.matrices, names=["model"]).to_csv(staging / "accuracy_matrix.csv")
        if report.accuracy is not None:
            report.accuracy.to_csv(staging / "accuracy_vs_fraction.csv")
        if report.orders is not None:
            report.orders.to_csv(staging / "order_sensitivity.csv")
        for name, table in (("per_type_accuracy", report.per_type), ("gamma_beta", report.film)):
            if not table.empty:
                table.to_csv(staging / f"{name}.csv")
        if not report.drift.empty:
            report.drift.to_csv(staging / "gamma_beta_drift.csv")
        for name, table in (
            ("measures", report.measures),
            ("comparison_with_naive", report.comparison),
            ("area_under_fraction_curve", report.auc),
            ("type_forgetting", report.type_forgetting),
        ):
            if not table.empty:
                table.to_csv(staging / f"{name}.csv")
        if not report.continual.empty:
            report.continual.to_csv(staging / "continual_eval.csv", index=False)
        for name, figure in report.figures.items():
            plots.save(figure, staging / name)
        if not histograms.empty:
            first = runs.first_order().first
            title = f"FiLM parameters over {first} (the paper's Figure 5): after {first}, and at the end"
            plots.save(plots.gamma_beta(histograms, hue="model", test=first, title=title), staging / "gamma_beta.png")
        (staging / "summary.md").write_text(summary_markdown(runs, report, report_command))
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


def _by_fraction(table: pd.DataFrame, name: str, order: list[str]) -> pd.DataFrame:
    wide = _pm(table, name).unstack(FRACTION)
    rank = {strategy: i for i, strategy in enumerate(order)}
    wide = wide.iloc[np.argsort([rank.get(_first(k), len(rank)) for k in wide.index], kind="stable")]
    wide.columns = [f"{f:g}" for f in wide.columns]
    return wide


def summary_markdown(runs: SweepRuns, report: _Report, report_command: str) -> str:
    cells = runs.cells
    first, last, tests = runs.first, runs.last, runs.tests
    names = runs.experiences
    seeds = sorted(cells["seed"].unique())
    grid = " × ".join(f"{cells[a].nunique()} values of {a.removeprefix('scenario.')}" for a in runs.axes)
    lines = [
        f"# clbench sweep report: {runs.experiment}",
        "",
        f"{len(cells)} finished cells: {cells['strategy'].nunique()} strategies × {grid + ' × ' if grid else ''}"
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); experiences {' → '.join(names)}; MLflow experiment "
        f"`{runs.experiment}`, parent run `{runs.parent_id}`.",
        "",
    ]
    if runs.command:
        lines += ["Produced by:", "", "```", runs.command, *([report_command] if report_command else []), "```", ""]
    timing = runs.sweep_metrics
    if "sweep/wall_time_s" in timing:
        lines += [
            f"Its last invocation ran {timing.get('sweep/cells_run', 0):.0f} cells in "
            f"{timing['sweep/wall_time_s'] / 60:.1f} min and trained experience 0 "
            f"{timing.get('sweep/experience0_trained', 0):.0f} times (once per group of cells sharing it; every "
            "other cell started from the cached model).",
            "",
        ]
    same = cells[cells["experiences"] == cells["experiences"].iloc[0]]
    before = {t: same[metric_names.accuracy(names[0], t)].mean() for t in tests}
    baseline = {t: cells.get(metric_names.majority_baseline(t), pd.Series([np.nan])).mean() for t in tests}
    several = " (the first order; the per-type and γ/β sections below too)" if len(same) < len(cells) else ""
    lines += [
        f"## After the first experience ({names[0]}){several}",
        "",
        ", ".join(f"{t} {100 * before[t]:.1f} % (majority answer {100 * baseline[t]:.1f} %)" for t in tests) + ".",
        "",
    ]
    largest = f" (fraction {cells[FRACTION].max():g})" if FRACTION in cells else ""
    headline = pd.DataFrame({f"{t} (%)": _pm(report.final, f"final {t}") for t in tests})
    headline["average accuracy (%)"] = _pm(report.final, "average accuracy")
    headline["forgetting (pts)"] = _pm(report.final, "average forgetting")
    headline["BWT (pts)"] = _pm(report.final, "bwt")
    mb = 1 / 2**20
    for name, scale in (("train time (s)", 1.0), ("wall time (s)", 1.0), ("strategy memory (MB)", mb)):
        if f"{name}_mean" in report.cost and report.cost[f"{name}_mean"].notna().any():
            headline[name] = _pm(report.cost, name, scale).reindex(headline.index)
    headline["seeds"] = report.final["n"]
    order = strategy_order(cells)
    lines += [
        f"## After the last experience{largest}",
        "",
        f"Mean ± half-width of the 95 % confidence interval across seeds (t-distribution with n − 1 degrees of "
        f"freedom; n is the seeds column, {', '.join(map(str, sorted(report.final['n'].unique())))} here; one "
        "seed: the mean alone).",
        "",
        _markdown(headline, order),
        "",
    ]
    if "train time (s)" in headline:
        lines += [
            "Train time is the run's own training: a run that started from the cached first-experience model did "
            "not pay for it (strategies of the `training` state kind, offline ones and those with a cache entry of "
            "their own did). Strategy memory is what it keeps beyond the model: stored questions and tensors.",
            "",
        ]
    if "stability_plasticity.png" in report.figures:
        lines += ["## Stability and plasticity", "", "![stability and plasticity](stability_plasticity.png)", ""]
    lines += _measures_markdown(runs, report, order)
    if report.accuracy is not None:
        lines += [
            f"## {last} accuracy (%) against the fraction of its data used (the paper's Figure 9)",
            "",
            "![accuracy vs fraction](accuracy_vs_fraction.png)",
            "",
            _by_fraction(report.accuracy, "new_after", order).to_markdown(),
            "",
            f"Retained {first} accuracy (%):",
            "",
            _by_fraction(report.accuracy, "old_after", order).to_markdown(),
            "",
        ]
    lines += ["## Forgetting (accuracy points)", "", "![forgetting](forgetting.png)", ""]
    if FRACTION in cells and len(tests) == 2:
        lines += [_by_fraction(report.forgetting, first, order).to_markdown(), ""]
    else:
        per_test = pd.DataFrame({t: _pm(report.forgetting, t) for t in runs.forgettable})
        per_test["mean"] = _pm(report.forgetting, "average")
        lines += [_markdown(per_test, order), ""]
    lines += ["## Accuracy matrices (%)", "", "![accuracy matrix](accuracy_matrix.png)", ""]
    for label, mat in report.matrices.items():
        lines += [f"**{label}**", "", (100 * mat).round(1).to_markdown(), ""]
    if report.orders is not None:
        table = pd.DataFrame(
            {
                "average accuracy (%)": _pm(report.orders, "average accuracy"),
                "forgetting (pts)": _pm(report.orders, "average forgetting"),
                "seeds": report.orders["n"],
            }
        )
        table = table.set_axis([" · ".join(map(str, k)) for k in table.index])
        lines += ["## Order sensitivity", "", table.to_markdown(), ""]
    if not report.per_type.empty:
        lines += _section(f"{first} accuracy per question type (%)", "per_type_accuracy.png", report.per_type)
    if not report.film.empty:
        lines += [f"## FiLM's (γ, β) over {first}", "", "![gamma beta](gamma_beta.png)", ""]
        lines += [report.film.round(3).to_markdown(), ""]
        if not report.drift.empty:
            drift = report.drift
            drift_all = drift.xs("all", level="block") if "all" in drift.index.get_level_values("block") else drift
            lines += [
                "How far the later experiences moved them (all blocks; per block in `gamma_beta_drift.csv`):",
                "",
                drift_all.round(3).to_markdown(),
                "",
            ]
    return "\n".join(lines)


def _section(title: str, figure: str, table: pd.DataFrame) -> list[str]:
    """A heading, its figure, and its table in percent (or points), one decimal."""
    alt = figure.removesuffix(".png").replace("_", " ")
    return [f"## {title}", "", f"![{alt}]({figure})", "", (100 * table).round(1).to_markdown(), ""]


def _first(key: Any) -> str:
    return key[0] if isinstance(key, tuple) else key


def _measures_markdown(runs: SweepRuns, report: _Report, order: list[str]) -> list[str]:
    lines: list[str] = []
    if not report.comparison.empty:
        lines += [
            "## Against naive fine-tuning",
            "",
            f"Each strategy minus naive fine-tuning with the same settings and seed: mean difference ± 95 % CI, and "
            f"the {measures.PAIRED_TEST}. A difference counts only where that test finds one.",
            "",
            _markdown(rm.comparison_markdown(report.comparison), order, disable_numparse=True),
            "",
        ]
    if not report.measures.empty:
        table = pd.DataFrame(index=report.measures.index)
        for name in rm.MEASURES:
            if f"{name}_mean" in report.measures:
                scale, digits = (100.0, 1) if name in rm.POINTS else (1.0, 0 if "iterations" in name else 2)
                table[name] = _pm(report.measures, name, scale, digits)
        table["seeds"] = report.measures["n"]
        lines += [
            "## Transfer, flips and the stability gap",
            "",
            "Definitions in `docs/measures.md`. Accuracies, transfer, flip rates and the gap in points (%); "
            "normalised forgetting as a share of what was learned above the majority answer; recovery in "
            "iterations from the lowest point until back within 1 point of the final value; forward transfer "
            "and intransigence need the reference runs (`eval.references`).",
            "",
            _markdown(table, order),
            "",
        ]
    if "continual_eval.png" in report.figures:
        lines += ["![continual evaluation](continual_eval.png)", ""]
    if not report.auc.empty:
        auc = pd.DataFrame({"area under the curve (%)": _pm(report.auc, "area under the curve")})
        auc["seeds"] = report.auc["n"]
        lines += [
            f"Area under {runs.last} accuracy against the fraction of its data (divided by the span of fractions: a "
            "mean accuracy over it):",
            "",
            _markdown(auc, order),
            "",
        ]
    if not report.type_forgetting.empty:
        title = f"{runs.first_order().first} forgetting per question type (points)"
        lines += _section(title, "type_forgetting.png", report.type_forgetting)
    return lines
