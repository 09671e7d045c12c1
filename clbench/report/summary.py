"""The sweep report: tables, figures and `summary.md` written into a folder (all or nothing) and logged to the
sweep's parent run."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clbench.core.paths import writable_folder
from clbench.evaluation import measures
from clbench.evaluation import names as metric_names
from clbench.report import figures as plots
from clbench.report import measures as rm
from clbench.report.runs import FRACTION, ORDER, SweepRuns, at_largest_fraction, in_strategy_order, strategy_order
from clbench.report.sweep_figures import (
    accuracy_figure,
    forgetting_figure,
    per_type_figure,
    stability_plasticity_figure,
)
from clbench.report.tables import (
    accuracy_table,
    cost_table,
    drift_table,
    film_histograms,
    film_table,
    final_table,
    forgetting_table,
    matrices,
    order_table,
    per_type_table,
)


def _pm(table: pd.DataFrame, name: str, scale: float = 100.0, digits: int = 1) -> pd.Series:
    """`mean ± half-width of the 95 % t-interval` strings (the mean alone where a group has one seed; – where it
    has no value)."""
    mean, ci = scale * table[f"{name}_mean"], scale * table[f"{name}_ci"]
    number = f"{{:.{digits}f}}".format
    text = mean.map(number) + (" ± " + ci.map(number)).where(ci.notna(), "")
    return text.where(mean.notna(), "–")


def _markdown(table: pd.DataFrame, order: list[str], **options: Any) -> str:
    """A table in strategy order, its (strategy, setting) rows labelled `strategy · setting`."""
    table = in_strategy_order(table, order)
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
    measures: pd.DataFrame = field(default_factory=pd.DataFrame)  # clbench.evaluation.measures per strategy, mean ± CI
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
    """The measures of clbench.evaluation.measures per strategy, the comparison with naive, and their figures."""
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
    for parent in runs.parents:
        for path in written:
            client.log_artifact(parent, str(path), "report")
    return written


def _by_fraction(table: pd.DataFrame, name: str, order: list[str]) -> pd.DataFrame:
    wide = _pm(table, name).unstack(FRACTION)
    wide = in_strategy_order(wide, order)
    wide.columns = [f"{f:g}" for f in wide.columns]
    return wide


def summary_markdown(runs: SweepRuns, report: _Report, report_command: str) -> str:
    """`summary.md`: what was swept, then one section per question a reader asks, in that order."""
    order = strategy_order(runs.cells)
    lines = _introduction(runs, report_command)
    lines += _after_first(runs)
    lines += _after_last(runs, report, order)
    if "stability_plasticity.png" in report.figures:
        lines += ["## Stability and plasticity", "", "![stability and plasticity](stability_plasticity.png)", ""]
    lines += _measures_markdown(runs, report, order)
    lines += _fractions_and_forgetting(runs, report, order)
    lines += ["## Accuracy matrices (%)", "", "![accuracy matrix](accuracy_matrix.png)", ""]
    for label, mat in report.matrices.items():
        lines += [f"**{label}**", "", (100 * mat).round(1).to_markdown(), ""]
    lines += _orders_types_and_film(runs, report)
    return "\n".join(lines)


def _introduction(runs: SweepRuns, report_command: str) -> list[str]:
    cells, names = runs.cells, runs.experiences
    seeds = sorted(cells["seed"].unique())
    grid = " × ".join(f"{cells[a].nunique()} values of {a.removeprefix('scenario.')}" for a in runs.axes)
    lines = [
        f"# clbench sweep report: {runs.experiment}",
        "",
        f"{len(cells)} finished cells: {cells['strategy'].nunique()} strategies × {grid + ' × ' if grid else ''}"
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); experiences {' → '.join(names)}; MLflow experiment "
        f"`{runs.experiment}`, {_parent_runs(runs)}.",
        "",
    ]
    if runs.command:
        lines += ["Produced by:", "", "```", runs.command, *([report_command] if report_command else []), "```", ""]
    timing = runs.sweep_metrics
    if "sweep/wall_time_s" in timing:
        whose = "Their last invocations" if len(runs.parents) > 1 else "Its last invocation"
        lines += [
            f"{whose} ran {timing.get('sweep/cells_run', 0):.0f} cells in "
            f"{timing['sweep/wall_time_s'] / 60:.1f} min and trained experience 0 "
            f"{timing.get('sweep/experience0_trained', 0):.0f} times (once per group of cells sharing it; every "
            "other cell started from the cached model).",
            "",
        ]
    return lines


def _parent_runs(runs: SweepRuns) -> str:
    if len(runs.parents) == 1:
        return f"parent run `{runs.parent_id}`"
    return f"{len(runs.parents)} sweeps of the same settings, parent runs " + ", ".join(f"`{p}`" for p in runs.parents)


def _after_first(runs: SweepRuns) -> list[str]:
    """The model every strategy starts from, once; strategies that trained the first experience their own way
    (from scratch, offline, with a loss of their own) are named apart rather than averaged in."""
    cells, names, tests = runs.cells, runs.experiences, runs.tests
    same = cells[cells["experiences"] == cells["experiences"].iloc[0]]
    columns = [metric_names.accuracy(names[0], t) for t in tests]
    per_strategy = same.groupby("strategy", sort=False)[columns].mean()
    none = [strategy for strategy, row in per_strategy.iterrows() if row.isna().all()]  # offline: joint
    per_strategy = per_strategy.drop(index=none)
    models: dict[tuple, list[str]] = {}  # the first experience's accuracies (to 0.1 point) → the strategies there
    for strategy, row in per_strategy.iterrows():
        models.setdefault(tuple(round(100 * v, 1) for v in row), []).append(strategy)
    shared, *own = sorted(models.items(), key=lambda item: -len(item[1]))
    baseline = {t: cells.get(metric_names.majority_baseline(t), pd.Series([np.nan])).mean() for t in tests}
    several = " (the first order; the per-type and γ/β sections below too)" if len(same) < len(cells) else ""
    line = ", ".join(
        f"{t} {value:.1f} % (majority answer {100 * baseline[t]:.1f} %)"
        for t, value in zip(tests, shared[0], strict=True)
    )
    if own:
        line += (
            f" for the {len(shared[1])} strategies that start from one model. The others train the first experience "
            "themselves (their state is built while it trains, or they start from scratch): "
        )
        line += "; ".join(
            f"{', '.join(strategies)} {', '.join(f'{t} {v:.1f} %' for t, v in zip(tests, values, strict=True))}"
            for values, strategies in own
        )
    if none:
        line += f". {', '.join(none)}: no model after the first experience alone (trained once, on all of them)"
    return [f"## After the first experience ({names[0]}){several}", "", line + ".", ""]


def _after_last(runs: SweepRuns, report: _Report, order: list[str]) -> list[str]:
    cells, tests = runs.cells, runs.tests
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
    lines = [
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
    return lines


def _fractions_and_forgetting(runs: SweepRuns, report: _Report, order: list[str]) -> list[str]:
    cells, first, last, tests = runs.cells, runs.first, runs.last, runs.tests
    lines = []
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
    return lines


def _orders_types_and_film(runs: SweepRuns, report: _Report) -> list[str]:
    first, lines = runs.first, []
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
    return lines


def _section(title: str, figure: str, table: pd.DataFrame) -> list[str]:
    """A heading, its figure, and its table in percent (or points), one decimal."""
    alt = figure.removesuffix(".png").replace("_", " ")
    return [f"## {title}", "", f"![{alt}]({figure})", "", (100 * table).round(1).to_markdown(), ""]


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
