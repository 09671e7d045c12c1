"""A sweep's runs read back from MLflow into pandas: one row per cell, its settings and metrics.

Everything a report shows is read from the tracking store alone (metrics for the numbers, `film_histograms.csv`
artifacts for the gamma/beta distributions), so a report can be rebuilt at any time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clbench.core.errors import ConfigError
from clbench.evaluation import names as metric_names
from clbench.report import figures as plots
from clbench.report import tracking
from clbench.report.tracking import CELL_TAG, COMMAND_TAG, KIND_TAG, PARENT_TAG

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
    parent_ids: list[str] = field(default_factory=list)  # every sweep a merged report reads, the first one first

    @property
    def parents(self) -> list[str]:
        return self.parent_ids or [self.parent_id]

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


def load_sweeps(experiment: str, sweep_ids: list[str], tracking_uri: str | None = None) -> SweepRuns:
    """One report over several sweeps of the same settings: a strategy swept later joins an earlier comparison
    without rerunning it. Sweeps whose settings differ (data, model, training, scenario, `--set`) are refused, so
    every row of the report was run the same way; a cell in two sweeps is taken from the later one."""
    if len(sweep_ids) < 2:
        return load_sweep(experiment, sweep_ids[0] if sweep_ids else None, tracking_uri)
    from mlflow import MlflowClient

    loaded = [load_sweep(experiment, sweep_id, tracking_uri) for sweep_id in sweep_ids]
    client = MlflowClient()
    settings = [_settings(client.get_run(runs.parent_id).data.params) for runs in loaded]
    for runs, setting in zip(loaded[1:], settings[1:], strict=True):
        differing = sorted(k for k in settings[0].keys() | setting.keys() if settings[0].get(k) != setting.get(k))
        if differing or runs.axes != loaded[0].axes or runs.experiences != loaded[0].experiences:
            what = ", ".join(differing[:4]) or "their grid axes or experiences"
            raise ConfigError(
                f"sweeps {loaded[0].parent_id} and {runs.parent_id} were run with different settings ({what})",
                "report them one at a time, or rerun one with the other's settings",
            )
    cells = pd.concat([runs.cells for runs in loaded], ignore_index=True)
    keys = ["strategy", "seed", *loaded[0].axes]
    cells = cells.drop_duplicates(keys, keep="last").reset_index(drop=True)
    totals = {k: sum(r.sweep_metrics.get(k, 0.0) for r in loaded) for k in loaded[0].sweep_metrics}
    return SweepRuns(
        loaded[0].parent_id,
        experiment,
        "\n".join(runs.command for runs in loaded if runs.command),
        cells,
        totals,
        loaded[0].axes,
        [runs.parent_id for runs in loaded],
    )


def _settings(params: dict[str, str]) -> dict[str, str]:
    """What must agree for two sweeps' cells to sit in one table: all but the grid's own lists and the versions."""
    return {k: v for k, v in params.items() if not k.startswith(("sweep.", "version."))}


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
    parent = _parent(MlflowClient(), experiment, sweep_id)
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
    command = parent.data.tags.get(COMMAND_TAG, "")
    return SweepRuns(parent.info.run_id, experiment, command, _cells(frame, axes), dict(parent.data.metrics), axes)


def _parent(client, experiment: str, sweep_id: str | None):
    """The sweep's parent run: the one asked for, or the latest sweep of the experiment."""
    import mlflow

    if sweep_id is not None:
        try:
            return client.get_run(sweep_id)
        except mlflow.exceptions.MlflowException:
            raise ConfigError(f"no run {sweep_id!r} in the tracking store", "pass a sweep's parent run id") from None
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
    return parents[0]


def _cells(frame: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """One row per finished cell: its strategy, seed, experiences, grid values and metrics."""
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
    rows = metrics.filter(regex=f"^{re.escape(metric_names.ACCURACY_PREFIX)}").notna().sum(axis=1)
    one_row = rows == metrics.filter(regex=f"^{re.escape(metric_names.final_accuracy(''))}").notna().sum(axis=1)
    summaries = [c for c in (metric_names.AVERAGE_FORGETTING, metric_names.BWT) if c in metrics]
    metrics.loc[one_row, summaries] = np.nan
    metrics = metrics[sorted(metrics.columns)]  # MLflow returns them in no fixed order; reports must not vary
    return pd.concat([cells, metrics], axis=1).sort_values(["strategy", *axes, "seed"]).reset_index(drop=True)


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


def in_strategy_order(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The table's rows sorted by strategy in `order` (stable within a strategy); an index of (strategy, setting)
    tuples sorts by its strategy, strategies not in `order` last."""
    rank = {strategy: i for i, strategy in enumerate(order)}
    keys = [rank.get(k[0] if isinstance(k, tuple) else k, len(rank)) for k in table.index]
    return table.iloc[np.argsort(keys, kind="stable")]


def at_largest_fraction(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells fine-tuned on the largest fraction (all cells without one), strategies in report order."""
    last = cells[cells[FRACTION] == cells[FRACTION].max()] if FRACTION in cells else cells
    order = {s: i for i, s in enumerate(strategy_order(last))}
    return last.sort_values("strategy", key=lambda column: column.map(order), kind="stable")
