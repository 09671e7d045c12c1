"""What the MLflow UI shows first: the experiment's description, its kind and the runs table's columns, all carried
by the experiment's tags, and the address that opens that table.

MLflow 3 opens an experiment in its GenAI mode (traces) unless the experiment says it holds model training
(`mlflow.experimentKind`) or the address asks for it (`workflowType=machine_learning`). The runs table's columns
are the UI's own state, which an experiment can carry as a shared view (`mlflow.sharedViewState.<key>`, opened by
`viewStateShareKey=<key>`); clbench writes one with the columns its runs are compared on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clbench.core.errors import ConfigError
from clbench.evaluation import names as metric_names

DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as an experiment's (or run's) description
_WRITTEN_TAG = "clbench.description"  # the description as clbench last wrote it: rewritten only while unchanged
_COLUMNS_TAG = "clbench.columns"  # the metric and param names the experiment's runs have logged so far
_KIND_TAG = "mlflow.experimentKind"
_MODEL_TRAINING = "custom_model_development"
VIEW_KEY = "clbench"
_VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"

_HEADER = """clbench runs: a FiLM model trained experience by experience.

Run names read strategy(its parameters that differ from the defaults) · scenario · its settings · seed.
Every column names its unit: `_frac` columns (accuracies, and the forgetting, BWT and transfer computed from them)
are fractions of 1 (0.62 is the 62 % that `clbench run` and the report print; a difference of 0.05 is 5 points),
`_s` seconds, `_bytes` bytes; flip rates are shares of questions, and `normalised_forgetting` a ratio (1: back to
the majority answer)."""

# (the columns a line names, the line); a line is shown once any of its columns exists in the experiment
_LINES: tuple[tuple[tuple[str, ...], str], ...] = (
    ((metric_names.AVERAGE_ACCURACY,), f"accuracy at the end (`{metric_names.final_accuracy('<test>')}` per test set)"),
    ((metric_names.AVERAGE_FORGETTING, metric_names.BWT, metric_names.NORMALISED_FORGETTING), "what the later "
     f"experiences made it forget (`{metric_names.forgetting('<test>')}` per test set)"),
    ((metric_names.NEGATIVE_FLIPS,), "questions answered right when learned and wrong at the end"),
    ((metric_names.MIN_ACC, metric_names.WC_ACC), "the worst moment while later experiences trained"),
    ((metric_names.FORWARD_TRANSFER, metric_names.INTRANSIGENCE), "against models trained from scratch and jointly"),
    ((metric_names.TRAIN_TIME, metric_names.HELD_BYTES), "what the strategy cost"),
)  # fmt: skip
_FOOTER = """Every run carries its accuracy matrix, continual-evaluation and γ/β plots as artifacts. Definitions:
docs/measures.md in the clbench repository."""


def describe(metrics: Iterable[str]) -> str:
    """The experiment's description, naming only the columns its runs have (`metrics`)."""
    present = set(metrics)
    lines = []
    for columns, text in _LINES:
        named = [f"`{c}`" for c in columns if c in present]
        if named:
            lines.append(f"- {', '.join(named)}: {text};")
    parts = [_HEADER]
    if lines:
        parts.append("Columns to compare on:\n" + "\n".join(lines))
    if any(m.startswith(metric_names.CONTINUAL_PREFIX) for m in present):
        parts.append(
            f"Open a run's Model metrics tab for `{metric_names.continual('<experience>', '<test>')}`: old-task "
            "accuracy against the iteration of the experience that trains."
        )
    return "\n\n".join([*parts, _FOOTER])


_SUMMARY = (metric_names.AVERAGE_ACCURACY, metric_names.AVERAGE_FORGETTING)


def view_columns(metrics: Iterable[str], params: Iterable[str]) -> list[str]:
    """The runs table's columns, as the UI names them: the strategy, the params a run was compared on (`params`:
    the strategy's changed parameters, the scenario's settings), final accuracy per test set, average accuracy and
    forgetting."""
    metrics = set(metrics)
    chosen = [f"params.`{p}`" for p in ("strategy", *sorted(set(params) - {"strategy"}))]
    finals = sorted(m for m in metrics if m.startswith(metric_names.final_accuracy("")))
    return [f"metrics.`{m}`" for m in (*finals, *_SUMMARY) if m in metrics] + chosen


def _kept(metric: str) -> bool:
    """The metric names the description and the view are made of (an experiment tag holds a few thousand
    characters, not every name a run logs)."""
    described = {c for columns, _ in _LINES for c in columns}
    return metric in described or metric.startswith((metric_names.final_accuracy(""), metric_names.CONTINUAL_PREFIX))


def experiment_tags(current: dict[str, str], metrics: Iterable[str], params: Iterable[str]) -> dict[str, str]:
    """The tags to set on an experiment whose tags are `current`, after a run logged `metrics` and was compared on
    `params` (names of its MLflow params).

    The columns seen so far accumulate; the description is rewritten only while it is the one clbench wrote (a
    user's own is left alone); the kind is set once, so a user can change it.
    """
    known = json.loads(current.get(_COLUMNS_TAG, "{}"))
    seen_metrics = sorted(set(known.get("metrics", [])) | {m for m in metrics if _kept(m)})
    seen_params = sorted(set(known.get("params", [])) | set(params))
    tags = {_COLUMNS_TAG: json.dumps({"metrics": seen_metrics, "params": seen_params})}
    text = describe(seen_metrics)
    if current.get(DESCRIPTION_TAG) in (None, current.get(_WRITTEN_TAG)):
        tags |= {DESCRIPTION_TAG: text, _WRITTEN_TAG: text}
    if _KIND_TAG not in current:
        tags[_KIND_TAG] = _MODEL_TRAINING
    tags[_VIEW_TAG] = json.dumps(_view(view_columns(seen_metrics, seen_params)))
    return {k: v for k, v in tags.items() if current.get(k) != v}


def _view(columns: list[str]) -> dict[str, Any]:
    """The runs table's state as the UI's shared views hold it: these columns, newest runs first, all shown."""
    return {
        "selectedColumns": columns,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "runsHiddenMode": "SHOW_ALL",
        "runListHidden": False,
        "viewMaximized": False,
    }


def runs_address(base: str, experiment_id: str) -> str:
    """The address of the experiment's runs table in model-training mode, with clbench's columns."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def ui_base(uri: str, port: int = 5000) -> str:
    """Where the UI of the store `uri` is served: an MLflow server is its own UI; `clbench ui` serves the rest."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"


def open_address(uri: str, port: int, experiment: str | None = None) -> str:
    """The address `clbench ui` opens: the runs table of `experiment` (default: the one whose run started last),
    its view written first where the experiment has none yet (made by an older clbench); the UI's root where
    the store holds no run."""
    from mlflow import MlflowClient

    base = ui_base(uri, port)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        if experiment:
            raise ConfigError(f"no MLflow store at {uri}", "run clbench here first, or pass its --tracking-uri")
        return base
    client = MlflowClient(uri)
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise ConfigError(f"no experiment {experiment!r} in {uri}", f"its experiments are: {names}")
        experiment_id = found.experiment_id
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
        latest = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1) if ids else []
        if not latest:
            return base
        experiment_id = latest[0].info.experiment_id
    tags = client.get_experiment(experiment_id).tags
    if _VIEW_TAG not in tags:
        runs = client.search_runs([experiment_id], max_results=200)
        metrics = {m for r in runs for m in r.data.metrics}
        params = {p for r in runs for p in r.data.params if p == "scenario.fraction"}
        for key, value in experiment_tags(tags, metrics, params).items():
            client.set_experiment_tag(experiment_id, key, value)
    return runs_address(base, experiment_id)


def require_free_port(port: int) -> None:
    """A port another program listens on is refused here, before MLflow's server fails on it in many lines."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on 127.0.0.1 is taken ({exc.strerror or exc})", f"pass another, e.g. --port {port + 1}"
            ) from None
