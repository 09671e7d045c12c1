"""A run's results rendered as text, for the console: the accuracy matrix first, then the measures as sentences."""

from __future__ import annotations

from clbench.evaluation import measures
from clbench.evaluation import names as metric_names
from clbench.run.result import RunResult


def summary(result: RunResult) -> str:
    """The accuracy matrix, the measures, per-type accuracy, FiLM statistics and cost, as the console shows them."""
    pct = result.accuracy.map(lambda v: f"{100 * v:5.1f}")
    lines = ["Accuracy matrix (%) — rows: after training on, columns: tested on", pct.to_string(), ""]
    base = ", ".join(f"{k} {100 * v:.1f}%" for k, v in result.majority_baseline.items())
    lines.append(f"Majority-answer baseline (test sets): {base}")
    forget = ", ".join(f"{k} {100 * v:+.1f} pts" for k, v in result.forgetting.items())
    average = f" (mean {100 * result.average_forgetting:+.1f})" if len(result.forgetting) > 1 else ""
    if result.forgetting:
        lines.append(f"Forgetting: {forget}{average}    BWT: {100 * result.bwt:+.1f} pts")
    else:
        lines.append("Forgetting: none to measure (one row: trained once, on everything)")
    lines += _measures_lines(result)
    lines += _validation_lines(result)
    if not result.per_type.empty:
        lines += [
            "",
            "Per question type (%):",
            result.per_type.map(lambda v: f"{100 * v:5.1f}").to_string(),
        ]
    if not result.film.empty:
        columns = ["gamma_negative_share", "gamma_near_zero_share", "gamma_mean", "gamma_std", "beta_std"]
        first = result.accuracy.columns[0]
        overall = result.film.xs(("all", first), level=("block", "test"))[columns]
        lines += ["", f"FiLM (gamma, beta) over {first}, all blocks:", overall.round(3).to_string()]
    if not result.film_drift.empty:
        drift = result.film_drift.xs("all", level="block")
        lines += ["", "FiLM drift from the end of the first experience to the last, all blocks:"]
        lines.append(drift.round(3).to_string())
    if result.cost:
        lines.append("\n" + _describe_cost(result.cost))
    lines.append(f"\nWall time: {result.wall_time_s:.1f} s    MLflow run: {result.run_id}")
    return "\n".join(lines)


def _measures_lines(result: RunResult) -> list[str]:
    """The measures of clbench.evaluation.measures, one sentence each."""
    lines = [f"Learning accuracy (each experience right after training on it): {100 * result.learning_accuracy:.1f}%"]
    if result.forgetting:
        normalised = ", ".join(
            f"{k} {v:.2f}" if v == v else f"{k} – (never above it)" for k, v in result.normalised_forgetting.items()
        )
        lines.append(f"Forgetting as a share of what was learned above the majority answer: {normalised}")
    for test, row in result.flips.iterrows():
        lines.append(
            f"{test}: {100 * row['negative']:.1f}% of questions answered right when learned and wrong at the "
            f"end (negative flips), {100 * row['positive']:.1f}% the reverse"
        )
    for name, values in (("Forward transfer", result.forward_transfer), ("Intransigence", result.intransigence)):
        if values:
            lines.append(f"{name}: " + ", ".join(f"{k} {100 * v:+.1f} pts" for k, v in values.items()))
    for (during, test), row in result.continual.iterrows():
        line = (
            f"While {during} trained, {test} fell to {100 * row['min_accuracy']:.1f}% (a stability gap of "
            f"{100 * row['stability_gap']:.1f} pts)"
        )
        if row["recovery_iterations"] == row["recovery_iterations"]:
            line += f", back within 1 pt of its final value {row['recovery_iterations']:.0f} iterations later"
        lines.append(line)
    if result.continual_summary:
        lines.append(
            f"min-ACC {100 * result.continual_summary['min_acc']:.1f}%, "
            f"WC-ACC {100 * result.continual_summary['wc_acc']:.1f}% (De Lange et al. 2023)"
        )
    return lines


def _validation_lines(result: RunResult) -> list[str]:
    """The validation stream in one line: what hyperparameters are chosen on, beside the test stream's figures."""
    if result.validation.empty:
        return []
    matrix = result.validation
    line = f"Validation (held out of each experience): average accuracy {100 * measures.average_accuracy(matrix):.1f}%"
    forgetting = measures.forgetting(matrix)
    if forgetting:
        line += f", forgetting {100 * measures.mean(forgetting):+.1f} pts"
    if result.validation_summary:
        line += f", WC-ACC {100 * result.validation_summary['wc_acc']:.1f}%"
    return [line]


def _describe_cost(values: dict[str, float]) -> str:
    mb = 2**20
    line = f"Cost: training {values[metric_names.TRAIN_TIME]:.1f} s"
    if values.get(metric_names.CONTINUAL_TIME):
        line += f" (continual evaluation {values[metric_names.CONTINUAL_TIME]:.1f} s of it)"
    line += f", peak RSS {values[metric_names.PEAK_RSS] / mb:,.0f} MB"
    if metric_names.CUDA_PEAK in values:
        line += f", CUDA peak {values[metric_names.CUDA_PEAK] / mb:,.0f} MB"
    questions, stored = int(values[metric_names.HELD_QUESTIONS]), values[metric_names.HELD_QUESTION_BYTES]
    state = values[metric_names.HELD_STATE_BYTES]
    holds = f"{questions:,} questions ({stored / mb:,.1f} MB) and {state / mb:,.1f} MB of state"
    return f"{line}; the strategy holds {holds}"
