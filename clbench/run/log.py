"""A run's parameters, results and artifacts, logged to its MLflow run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml

from clbench.evaluation import measures
from clbench.evaluation import names as metric_names
from clbench.evaluation import periodic as continual
from clbench.evaluation.metrics import (
    FiLMSnapshot,
    film_drift,
)
from clbench.model.film import count_parameters
from clbench.report import figures as plots
from clbench.report import tracking
from clbench.run.context import RunContext
from clbench.run.result import RunResult
from clbench.scenario.contract import PREFIX as SCENARIO_PREFIX
from clbench.strategy.contract import shortcut


def log_params(ctx: RunContext, cached: bool) -> None:
    """Everything a run is compared or filtered on in the MLflow UI."""
    run_id, config, strategy, scenario, bench = ctx.run_id, ctx.config, ctx.strategy, ctx.scenario, ctx.bench
    model, device, key = ctx.model, ctx.device, ctx.key if ctx.reuse else ""
    params = tracking.flatten(config.to_dict()) | {"strategy": strategy.name, "scenario": scenario.name}
    params |= {f"strategy.{k}": v for k, v in strategy.params().items()}
    params |= {f"{SCENARIO_PREFIX}{k}": v for k, v in scenario.params().items()}
    params |= {"scenario.experiences": ",".join(bench.experience_names), "scenario.tests": ",".join(bench.test_names)}
    params |= {"data.fingerprint": bench.fingerprint, "data.inputs": bench.inputs, "device.resolved": str(device)}
    params["device.threads"] = torch.get_num_threads()  # CPU sums differ in order with it: so do the last digits
    if bench.inputs == "features":
        params["data.feature_bank.resolved"] = "host" if bench.bank is None else str(device)
    params |= {f"data.size.{k}": v for k, v in bench.sizes.items()}
    params |= {"model.parameters": count_parameters(model)} | tracking.versions()
    params |= {"experience0.key": key, "experience0.cached": cached}
    params |= {"strategy.state": strategy.state or "unsaid", "strategy.shortcut": shortcut(strategy)}
    tracking.log_params(run_id, params)


def film_tables(
    snapshots: list[dict[int, FiLMSnapshot]], names: list[str], tests: list[str]
) -> dict[str, pd.DataFrame]:
    """Gamma/beta summaries after every experience, and their drift from the end of the first to the last."""
    if not snapshots or not snapshots[0]:
        return {}
    keys = [(names[i], tests[j]) for i, per_test in enumerate(snapshots) for j in per_test]
    index = ["after", "test"]
    film = pd.concat([snapshots[i][j].summary() for i, per_test in enumerate(snapshots) for j in per_test], keys=keys)
    film.index = film.index.set_names([*index, "block"])
    histograms = pd.concat(
        [snapshots[i][j].histogram_frame() for i, per_test in enumerate(snapshots) for j in per_test],
        keys=keys,
        names=[*index, None],
    ).reset_index(level=index)
    drift = pd.DataFrame()
    if len(snapshots) > 1:
        first, last = snapshots[0], snapshots[-1]
        common = [j for j in first if j in last]
        drift = pd.concat([film_drift(first[j], last[j]) for j in common], keys=[tests[j] for j in common])
        drift.index = drift.index.set_names(["test", "block"])
    return {"film": film, "film_drift": drift, "film_histograms": histograms.reset_index(drop=True)}


def summary_metrics(result: RunResult) -> dict[str, float]:
    """The run's final figures under flat names, one value each: the columns runs are compared on."""
    metrics = {metric_names.forgetting(test): value for test, value in result.forgetting.items()}
    if result.forgetting:  # an offline run has no earlier experience: no forgetting, not zero forgetting
        metrics[metric_names.BWT] = result.bwt
        metrics[metric_names.AVERAGE_FORGETTING] = result.average_forgetting
    metrics |= {metric_names.backward_transfer(test): value for test, value in result.backward_transfer.items()}
    metrics[metric_names.AVERAGE_ACCURACY] = result.average_accuracy
    metrics |= {metric_names.final_accuracy(test): value for test, value in result.accuracy.iloc[-1].items()}
    for after, row in result.accuracy.iterrows():
        metrics |= {metric_names.accuracy(after, test): value for test, value in row.items()}
    for (after, test), row in result.per_type.iterrows():
        metrics |= {metric_names.type_accuracy(after, test, kind): v for kind, v in row.items() if pd.notna(v)}
    for (after, test, block), row in result.film.iterrows():
        metrics |= {metric_names.film(after, test, block, stat): value for stat, value in row.items()}
    for (test, block), row in result.film_drift.iterrows():
        metrics |= {metric_names.film_drift(test, block, stat): value for stat, value in row.items()}
    metrics |= {metric_names.majority_baseline(test): v for test, v in result.majority_baseline.items()}
    metrics |= _measure_metrics(result)
    metrics |= validation_metrics(result.validation, result.validation_summary)
    metrics[metric_names.WALL_TIME] = result.wall_time_s
    metrics |= result.cost
    return {name: float(value) for name, value in metrics.items()}


def _measure_metrics(result: RunResult) -> dict[str, float]:
    """The measures of clbench.evaluation.measures: per test set and their mean (NaN means are left out)."""
    metrics = {metric_names.LEARNING_ACCURACY: result.learning_accuracy}
    per_test = {
        metric_names.NORMALISED_FORGETTING: result.normalised_forgetting if result.forgetting else {},
        metric_names.FORWARD_TRANSFER: result.forward_transfer,
        metric_names.INTRANSIGENCE: result.intransigence,
        metric_names.NEGATIVE_FLIPS: result.flips["negative"].to_dict() if not result.flips.empty else {},
        metric_names.POSITIVE_FLIPS: result.flips["positive"].to_dict() if not result.flips.empty else {},
    }
    for measure, values in per_test.items():
        metrics |= {metric_names.per_test(measure, test): value for test, value in values.items()}
        if values:
            metrics[measure] = measures.mean(values)
    for kind, values in result.references.items():
        metrics |= {metric_names.reference_accuracy(kind, test): value for test, value in values.items()}
    for test, row in result.type_forgetting.iterrows():
        metrics |= {metric_names.type_forgetting(test, kind): v for kind, v in row.items() if pd.notna(v)}
    for (during, test), row in result.continual.iterrows():
        metrics |= {metric_names.continual_measure(during, test, stat): v for stat, v in row.items() if stat != "final"}
    if result.continual_summary:
        metrics[metric_names.MIN_ACC] = result.continual_summary["min_acc"]
        metrics[metric_names.WC_ACC] = result.continual_summary["wc_acc"]
    return {name: value for name, value in metrics.items() if pd.notna(value)}


def validation_metrics(matrix: pd.DataFrame, summary: dict[str, float]) -> dict[str, float]:
    """The validation stream's figures, the test stream's names under `valid/`: its accuracy matrix, average and
    learning accuracy, forgetting and BWT, min-ACC and WC-ACC (none without a validation stream)."""
    if matrix.empty:
        return {}
    named = metric_names.validation
    forgetting, transfer = measures.forgetting(matrix), measures.backward_transfer(matrix)
    metrics = {named(metric_names.forgetting(test)): value for test, value in forgetting.items()}
    if forgetting:
        metrics[named(metric_names.AVERAGE_FORGETTING)] = measures.mean(forgetting)
        metrics[named(metric_names.BWT)] = measures.mean(transfer)
    metrics[named(metric_names.AVERAGE_ACCURACY)] = measures.average_accuracy(matrix)
    metrics[named(metric_names.LEARNING_ACCURACY)] = measures.learning_accuracy(matrix)
    metrics |= {named(metric_names.final_accuracy(test)): value for test, value in matrix.iloc[-1].items()}
    for after, row in matrix.iterrows():
        metrics |= {named(metric_names.accuracy(after, test)): value for test, value in row.items()}
    if summary:
        metrics[named(metric_names.MIN_ACC)] = summary["min_acc"]
        metrics[named(metric_names.WC_ACC)] = summary["wc_acc"]
    return {name: float(value) for name, value in metrics.items() if pd.notna(value)}


def log_result(ctx: RunContext, result: RunResult) -> None:
    """Final figures as metrics, and the accuracy matrix, config and checkpoint as artifacts."""
    run_id, config, strategy, scenario, logger = ctx.run_id, ctx.config, ctx.strategy, ctx.scenario, ctx.logger
    model = ctx.template.model  # the template's: GDumb replaces the model
    from mlflow import MlflowClient

    step = len(result.accuracy) - 1
    for name, value in summary_metrics(result).items():
        logger.log_single_metric(name, value, step)
    logger.flush()
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result.accuracy.to_csv(folder / "accuracy_matrix.csv")
        if not result.validation.empty:
            result.validation.to_csv(folder / "validation_matrix.csv")
        if not result.per_type.empty:
            result.per_type.to_csv(folder / "per_type_accuracy.csv")
        if not result.film.empty:
            result.film.to_csv(folder / "film_stats.csv")
            result.film_histograms.to_csv(folder / "film_histograms.csv", index=False)
            first = result.accuracy.columns[0]
            figure = plots.gamma_beta(
                result.film_histograms, hue="after", test=first, reference=result.accuracy.index[0]
            )
            plots.save(figure, folder / "gamma_beta.png")
        if not result.film_drift.empty:
            result.film_drift.to_csv(folder / "film_drift.csv")
        _measure_artifacts(result, folder)
        resolved = {
            "config": config.to_dict(),
            "strategy": {"name": strategy.name, **strategy.params()},
            "scenario": {"name": scenario.name, **scenario.params()},
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(resolved)), sort_keys=False))
        (folder / "summary.txt").write_text(result.summary() + "\n")
        torch.save(model.state_dict(), folder / "model.pt")
        client.log_artifacts(run_id, str(folder))
    compared = ["strategy", *(f"strategy.{k}" for k in tracking.changed_parameters(strategy))]
    defaults = type(scenario).parameters()
    compared += [f"{SCENARIO_PREFIX}{k}" for k, v in scenario.params().items() if k == "fraction" or v != defaults[k]]
    tracking.describe_experiment(client.get_run(run_id).info.experiment_id, run_id, compared)


def _measure_artifacts(result: RunResult, folder: Path) -> None:
    """The run's own tables and plots of its measures: accuracy matrix, continual evaluation, flips."""
    name = result.accuracy.index[-1]
    plots.save(plots.accuracy_matrices({f"this run ({name} last)": result.accuracy}), folder / "accuracy_matrix.png")
    frame = continual.curve_frame(result.curves)
    if not frame.empty:
        frame.to_csv(folder / "continual_eval.csv", index=False)
        result.continual.to_csv(folder / "continual_measures.csv")
        frame["curve"] = frame["test"] + " while " + frame["during"] + " trains"
        title = "Continual evaluation: old test sets during later experiences (fixed subsets)"
        plots.save(plots.continual_curves(frame, "curve", title), folder / "continual_eval.png")
    if not result.flips.empty:
        result.flips.to_csv(folder / "flips.csv")
    if not result.type_forgetting.empty:
        result.type_forgetting.to_csv(folder / "type_forgetting.csv")
