"""What a sweep prints: a line per cell as it ends, the tally, and the commands to run next (each runs as printed)."""

from __future__ import annotations

from typing import Any

from clbench.core.invocation import clbench_command, store_option
from clbench.evaluation import names as metric_names
from clbench.report import ui
from clbench.scenario.contract import DEFAULT as DEFAULT_SCENARIO
from clbench.scenario.contract import load as load_scenario


def describe(outcome: Any) -> str:
    """One cell's outcome (a `CellOutcome`): its final accuracies and forgetting, or its error."""
    if outcome.status == "FAILED":
        return f"FAILED   {outcome.cell.label}: {outcome.error}"
    prefix = metric_names.final_accuracy("")
    final = " ".join(
        f"{name.removeprefix(prefix)} {100 * value:.1f}%"
        for name, value in outcome.figures.items()
        if name.startswith(prefix)
    )
    forgetting = outcome.figures.get(metric_names.AVERAGE_FORGETTING)
    forgot = f"forgetting {100 * forgetting:+.1f} pts" if forgetting is not None else "no forgetting to measure"
    trained = ", trained experience 0" if outcome.experience0_trained else ""
    timing = f"{outcome.wall_time_s:.0f} s{trained}"
    return f"finished {outcome.cell.label}: {final}, {forgot} ({timing})"


def tally(result: Any) -> str:
    """The sweep's end (a `SweepResult`): cells finished, skipped and failed, and its parent run."""
    lines = [
        f"sweep: {result.count('FINISHED')} cells finished, {result.count('SKIPPED')} skipped (done before), "
        f"{result.count('FAILED')} failed in {result.wall_time_s:.0f} s; experience 0 trained "
        f"{result.experience0_trained}× — parent run {result.parent_run_id}"
    ]
    lines += [f"  failed: {o.cell.label}: {o.error}" for o in result.outcomes if o.status == "FAILED"]
    return "\n".join(lines)


def report_command(scenario: str, experiment: str, uri: str) -> str:
    """`clbench report` for this sweep, with every option whose default would find another one."""
    args = ["report"]
    if scenario != DEFAULT_SCENARIO:
        args += ["--scenario", scenario]
    if experiment != load_scenario(scenario).name:  # report's default experiment is the scenario's name
        args += ["--experiment", experiment]
    return clbench_command(*args, *store_option(uri), "--out", "results/")


def ui_line(experiment: str, experiment_id: str, uri: str) -> str:
    """Where the sweep's runs are compared: the runs table of its experiment in the MLflow UI."""
    address = ui.runs_address(ui.ui_base(uri), experiment_id)
    if uri.startswith(("http://", "https://")):
        return f"compare its runs in the MLflow UI: {address}"
    command = clbench_command("ui", "--experiment", experiment, *store_option(uri))
    return f"compare its runs in the MLflow UI: {command}, then open {address}"
