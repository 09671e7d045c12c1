"""A search's summary folder (`clbench tune`): what was searched, what was chosen, and its test result.

Only validation figures describe the trials (the objective against each parameter, fANOVA importances, the Pareto
front for two objectives); the test stream appears once, for the chosen parameters rerun on fresh seeds, with 95 %
intervals and the paired test against naive fine-tuning (`clbench.report.measures`). No trial's test metric is
written here: that is what keeps the test sets honest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clbench.core.paths import writable_folder
from clbench.evaluation import measures as cl_measures
from clbench.evaluation import names as metric_names
from clbench.report import figures as plots
from clbench.report import measures as report_measures
from clbench.strategy.search import Space

_FINAL_COLUMNS = {
    "average accuracy": metric_names.AVERAGE_ACCURACY,
    "average forgetting": metric_names.AVERAGE_FORGETTING,
    "new-task accuracy": "new_task_accuracy",
    "WC-ACC": metric_names.WC_ACC,
}


@dataclass
class TuningReport:
    """What the summary is made from: the study, the chosen trial and the final reruns' test figures."""

    scenario: str
    strategy: str
    objectives: list[tuple[str, str]]  # (name, direction), in order
    spaces: dict[str, Space]
    study: Any  # the optuna Study
    chosen: dict[str, Any]
    chosen_number: int
    finals: pd.DataFrame  # one row per final rerun: role (tuned | naive), strategy, seed, its figures
    last_test: str
    command: str = ""
    study_name: str = ""
    storage: str = ""
    notes: list[str] = field(default_factory=list)
    trial_seeds: tuple[int, ...] = ()  # the seeds each trial ran on: naive on the same seeds is its reference
    objective_metrics: dict[str, str] = field(default_factory=dict)  # objective name → its validation metric


def trials_table(study: Any, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per trial: number, state, parameters, objective values and the validation figures it logged."""
    rows = []
    for trial in study.trials:
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name.lower()}
        row |= {f"param {k}": v for k, v in trial.params.items()}
        for (name, _), value in zip(objectives, trial.values or [np.nan] * len(objectives), strict=True):
            row[f"objective {name}"] = value
        validation = trial.user_attrs.get("validation", {})
        row |= {k: v for k, v in validation.items() if k.startswith(metric_names.VALIDATION_PREFIX)}
        if trial.intermediate_values:
            row["last rung"] = max(trial.intermediate_values)
        rows.append(row)
    return pd.DataFrame(rows)


def naive_runs(finals: pd.DataFrame) -> pd.DataFrame:
    """The final reruns of naive fine-tuning (none where there were no finals)."""
    return finals[finals["role"] == "naive"] if "role" in finals else finals.iloc[0:0]


def naive_validation(finals: pd.DataFrame, seeds: tuple[int, ...]) -> tuple[pd.Series, str]:
    """Naive fine-tuning's validation figures on the trials' seeds (else averaged over the final seeds), and what
    they are: the line a trial must clear to be worth its strategy. Seeds differ by points here, so a trial is
    compared with naive on its own seeds wherever the finals ran them. Empty without naive finals."""
    naive = naive_runs(finals)
    same = naive[naive["seed"].isin(seeds)] if "seed" in naive else naive.iloc[0:0]
    if same.empty:
        same, label = naive, "naive fine-tuning, mean of the final seeds"
    else:
        label = f"naive fine-tuning, seed {', '.join(map(str, sorted(set(same['seed']))))}"
    columns = [c for c in same.columns if str(c).startswith(metric_names.VALIDATION_PREFIX)]
    return (same[columns].mean() if len(same) else pd.Series(dtype=float)), label


def objective_figure(
    table: pd.DataFrame,
    spaces: dict[str, Space],
    objectives: list[tuple[str, str]],
    naive: pd.Series | None = None,
    naive_label: str = "naive fine-tuning",
) -> Figure:
    """Each objective against each searched parameter, complete trials only (pruned ones have no objective), with
    naive fine-tuning's value (`naive`: objective name → value) drawn across where it is known."""
    done = table[table["state"] == "complete"]
    naive = pd.Series(dtype=float) if naive is None else naive
    figure = Figure(figsize=(max(6.0, 4 * len(spaces)), 3.2 * len(objectives)), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(objectives), len(spaces), squeeze=False))
    for row, (name, direction) in enumerate(objectives):
        for column, (param, space) in enumerate(spaces.items()):
            ax = axes[row, column]
            x = done[f"param {param}"].astype(str) if space.kind == "choice" else done[f"param {param}"]
            ax.scatter(x, done[f"objective {name}"], color="tab:blue", label="trial")
            if name in naive:
                ax.axhline(naive[name], color="0.4", linestyle="--", label=naive_label)
                ax.legend(fontsize=8)
            if space.log_scale:
                ax.set_xscale("log")
            if space.kind != "choice":  # the whole range searched, so what was left unexplored shows
                ax.set_xlim(space.low, space.high)
            ax.set_xlabel(param)
            ax.set_ylabel(f"validation {name} ({'higher' if direction == 'maximize' else 'lower'} is better)")
    figure.suptitle(
        "Objective against each parameter\n(complete trials, validation stream, x: the range searched)", fontsize=10
    )
    return figure


def importances(report: TuningReport) -> pd.DataFrame:
    """fANOVA importance of each parameter for each objective (Optuna's evaluator, seeded)."""
    import optuna

    frames = {}
    for i, (name, _) in enumerate(report.objectives):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        values = optuna.importance.get_param_importances(
            report.study, evaluator=evaluator, target=lambda t, i=i: t.values[i]
        )
        frames[name] = pd.Series(values, dtype=float)
    return pd.DataFrame(frames).rename_axis("parameter")


def pareto_figure(table: pd.DataFrame, front: list[int], objectives: list[tuple[str, str]]) -> Figure:
    done = table[table["state"] == "complete"]
    (first, _), (second, _) = objectives
    on = done["number"].isin(front)
    figure = Figure(figsize=(5, 4), layout="constrained")
    ax = figure.subplots()
    ax.scatter(done.loc[~on, f"objective {first}"], done.loc[~on, f"objective {second}"], color="0.6", label="trial")
    ax.scatter(done.loc[on, f"objective {first}"], done.loc[on, f"objective {second}"], color="tab:red", label="front")
    ax.set_xlabel(f"validation {first}")
    ax.set_ylabel(f"validation {second}")
    ax.legend(fontsize=8)
    ax.set_title("Pareto front of the search (validation stream)", fontsize=10)
    return figure


def frontier_figure(table: pd.DataFrame, chosen_number: int, naive: pd.DataFrame) -> Figure | None:
    """What each trial traded: forgetting against learning accuracy on the validation stream, with naive
    fine-tuning's final seeds beside them. A single objective picks one point; this shows whether any setting
    forgets less without learning less, which is the question a search that found nothing better must answer."""
    x_name = metric_names.validation(metric_names.AVERAGE_FORGETTING)
    y_name = metric_names.validation(metric_names.LEARNING_ACCURACY)
    done = table[table["state"] == "complete"]
    if x_name not in done or y_name not in done or done[[x_name, y_name]].isna().all().any():
        return None
    figure = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = figure.subplots()
    ax.scatter(100 * done[x_name], 100 * done[y_name], color="tab:blue", label="trial")
    for _, trial in done.iterrows():
        ax.annotate(str(int(trial["number"])), (100 * trial[x_name], 100 * trial[y_name]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    chosen = done[done["number"] == chosen_number]
    ax.scatter(100 * chosen[x_name], 100 * chosen[y_name], s=120, facecolors="none", edgecolors="tab:red",
               label="chosen")  # fmt: skip
    if {x_name, y_name} <= set(naive.columns) and len(naive):
        ax.scatter(100 * naive[x_name], 100 * naive[y_name], marker="x", color="0.3",
                   label="naive fine-tuning (final seeds)")  # fmt: skip
        for _, run in naive.iterrows():
            ax.annotate(f"seed {int(run['seed'])}", (100 * run[x_name], 100 * run[y_name]), fontsize=7,
                        color="0.3", xytext=(3, -9), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("validation forgetting (pts, lower is better)")
    ax.set_ylabel("validation learning accuracy (%, higher is better)")
    ax.set_title("What each trial traded (upper left is better)", fontsize=10)
    ax.legend(fontsize=8)
    return figure


def final_tables(finals: pd.DataFrame, last_test: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The final reruns' test figures: mean with its 95 % t-interval per role, and the tuned strategy against naive
    paired by seed (`clbench.report.measures.comparison_table`)."""
    cells = report_measures.with_derived(finals, last_test)
    summary = report_measures.mean_ci(cells, ["strategy"], _FINAL_COLUMNS)
    comparison = report_measures.comparison_table(cells, [])
    if not comparison.empty:
        comparison.index = comparison.index.get_level_values("strategy")
    return summary, comparison


def write_summary(report: TuningReport, folder: Path) -> list[Path]:
    """summary.md with the chosen values and the final test result, beside the trials' table and figures."""
    folder = writable_folder(folder, "--out")
    written: list[Path] = []
    table = trials_table(report.study, report.objectives)
    table.to_csv(folder / "trials.csv", index=False)
    written.append(folder / "trials.csv")
    naive, naive_label = naive_validation(report.finals, report.trial_seeds)
    naive_objectives = pd.Series(
        {name: naive[metric] for name, metric in report.objective_metrics.items() if metric in naive}
    )
    figure = objective_figure(table, report.spaces, report.objectives, naive_objectives, naive_label)
    plots.save(figure, folder / "objective_vs_parameters.png")
    written.append(folder / "objective_vs_parameters.png")
    frontier = frontier_figure(table, report.chosen_number, naive_runs(report.finals))
    if frontier is not None:
        plots.save(frontier, folder / "frontier.png")
        written.append(folder / "frontier.png")
    importance = _importances_or_note(report)
    if not importance.empty:
        importance.to_csv(folder / "importances.csv")
        written.append(folder / "importances.csv")
    if len(report.objectives) == 2:
        front = [t.number for t in report.study.best_trials]
        plots.save(pareto_figure(table, front, report.objectives), folder / "pareto_front.png")
        table[table["number"].isin(front)].to_csv(folder / "pareto_front.csv", index=False)
        written += [folder / "pareto_front.png", folder / "pareto_front.csv"]
    (folder / "chosen.json").write_text(json.dumps(report.chosen, indent=2, default=str) + "\n")
    written.append(folder / "chosen.json")
    final_summary, comparison = pd.DataFrame(), pd.DataFrame()
    if not report.finals.empty:
        final_summary, comparison = final_tables(report.finals, report.last_test)
        final_summary.to_csv(folder / "final_test.csv")
        written.append(folder / "final_test.csv")
        if not comparison.empty:
            comparison.to_csv(folder / "final_vs_naive.csv")
            written.append(folder / "final_vs_naive.csv")
    figures = [p.name for p in written if p.suffix == ".png"]
    (folder / "summary.md").write_text(_markdown(report, table, importance, final_summary, comparison, figures))
    return [folder / "summary.md", *written]


def _importances_or_note(report: TuningReport) -> pd.DataFrame:
    complete = [t for t in report.study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        report.notes.append("Importances need two complete trials or more.")
        return pd.DataFrame()
    try:
        return importances(report)
    except (RuntimeError, ValueError) as exc:  # e.g. every trial drew the same value
        report.notes.append(f"No fANOVA importances: {exc}")
        return pd.DataFrame()


def _markdown(
    report: TuningReport,
    table: pd.DataFrame,
    importance: pd.DataFrame,
    final_summary: pd.DataFrame,
    comparison: pd.DataFrame,
    figures: list[str],
) -> str:
    states = table["state"].value_counts().to_dict() if not table.empty else {}
    objectives = ", ".join(f"{name} ({direction})" for name, direction in report.objectives)
    lines = [
        f"# Tuning {report.strategy} on {report.scenario}",
        "",
        f"Command: `{report.command}`" if report.command else "",
        f"Study `{report.study_name}` in `{report.storage}`: {len(table)} trials "
        f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}). "
        f"Objective on the validation stream: {objectives}.",
        "",
        "| parameter | searched | chosen |",
        "|---|---|---|",
        *(f"| {name} | `{space}` | {_value(report.chosen.get(name))} |" for name, space in report.spaces.items()),
        "",
        f"Chosen: trial {report.chosen_number}"
        + (", the best of the Pareto front on the first objective" if len(report.objectives) == 2 else ""),
        "",
    ]
    if not importance.empty:
        lines += ["## Parameter importance (fANOVA)", "", importance.round(3).to_markdown(), ""]
    lines += _final_markdown(report, final_summary, comparison)
    names = {"frontier.png": "`frontier.png` (forgetting against learning accuracy)"}
    shown = [names.get(f, f"`{f}`") for f in figures]
    lines += ["", *report.notes, "", f"Figures: {', '.join(shown)}", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _final_markdown(report: TuningReport, final_summary: pd.DataFrame, comparison: pd.DataFrame) -> list[str]:
    if final_summary.empty:
        return ["## Test result", "", "No final reruns (`--final-seeds none`).", ""]
    seeds = ", ".join(str(s) for s in sorted(set(report.finals["seed"])))
    shown = pd.DataFrame(index=final_summary.index)
    for name in _FINAL_COLUMNS:
        if f"{name}_mean" in final_summary:
            mean, ci = 100 * final_summary[f"{name}_mean"], 100 * final_summary[f"{name}_ci"]
            shown[f"{name} (%)"] = mean.map("{:.1f}".format) + (" ± " + ci.map("{:.1f}".format)).where(ci.notna(), "")
    shown["seeds"] = final_summary["n"]
    lines = [
        "## Test result of the chosen values",
        "",
        f"Rerun on seeds {seeds}; the test stream's figures, mean ± 95 % t-interval. The trials' test figures are "
        "not used or shown.",
        "",
        shown.to_markdown(),
        "",
    ]
    if not comparison.empty:
        lines += [
            f"Against naive fine-tuning, {cl_measures.PAIRED_TEST}:",
            "",
            report_measures.comparison_markdown(comparison).to_markdown(),
            "",
        ]
    return lines


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
