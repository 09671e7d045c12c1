"""Hyperparameter search on the validation stream: an Optuna study whose trials are runs, under one MLflow parent.

Each trial draws a strategy's parameters (seeded TPE; two objectives: TPE's multi-objective mode, whose best
trials are the Pareto front), runs the scenario on each of `seeds` as a child run of the tune's parent run, and
returns a validation measure (`OBJECTIVES`); the test stream is never read to decide anything. The pruner's rungs
are the experiences: after experience j a trial reports its validation accuracy (the mean over the validation
sets seen so far) and stops once that falls below the median of the trials that reached j (single objective).

The study lives in Optuna storage (SQLite beside the MLflow store by default, or a database URL), so the same
command continues a killed search without redoing finished trials, and several processes (`--jobs`) or Ray
tasks share one study. Experience 0 is trained once per seed for the whole study: trials start from the
experience-0 cache as every run does (`clbench.training.checkpoints`).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clbench.config import RunConfig
from clbench.core.errors import ClbenchError, ConfigError
from clbench.evaluation import measures
from clbench.evaluation import names as metric_names
from clbench.report import tracking
from clbench.report.tracking import COMMAND_TAG, ERROR_TAG, KIND_TAG, PARENT_TAG
from clbench.scenario.contract import Scenario
from clbench.scenario.contract import experience_names as checked_names
from clbench.scenario.contract import load as load_scenario
from clbench.strategy.contract import Strategy, instantiate, resolve
from clbench.strategy.search import Space, integer_fields, parse_space
from clbench.training import checkpoints

STUDY_TAG = "clbench.study"  # on the parent and every child: the Optuna study's name
TRIAL_TAG = "clbench.trial"  # on a trial's runs: its number
STATE_TAG = "clbench.trial_state"  # complete | pruned | failed
FINAL_TAG = "clbench.final"  # on a final rerun: role|seed|parameters
OBJECTIVE_METRIC = "trial/objective"
SAMPLER_SEED = 0
_HEARTBEAT_S, _GRACE_S = 20, 60  # a trial whose process died is failed (and retried) after a minute of silence


@dataclass(frozen=True)
class Objective:
    """A validation measure to optimise: its name on the command line, its MLflow metric and direction."""

    name: str
    metric: str
    direction: str  # maximize | minimize


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("average_accuracy", metric_names.validation(metric_names.AVERAGE_ACCURACY), "maximize"),
        Objective("forgetting", metric_names.validation(metric_names.AVERAGE_FORGETTING), "minimize"),
        Objective("wc_acc", metric_names.validation(metric_names.WC_ACC), "maximize"),
        Objective("min_acc", metric_names.validation(metric_names.MIN_ACC), "maximize"),
        Objective("learning_accuracy", metric_names.validation(metric_names.LEARNING_ACCURACY), "maximize"),
        Objective("bwt", metric_names.validation(metric_names.BWT), "maximize"),
    )
}
_ALIASES = {
    "accuracy": "average_accuracy",
    "average_forgetting": "forgetting",
    "wc-acc": "wc_acc",
    "min-acc": "min_acc",
}


def parse_objectives(text: str) -> tuple[Objective, ...]:
    """`--objective`: one validation measure, or two separated by a comma (a Pareto front)."""
    import difflib

    names = [_ALIASES.get(n.strip().lower(), n.strip().lower()) for n in text.split(",")]
    for name in names:
        if name not in OBJECTIVES:
            close = difflib.get_close_matches(name, [*OBJECTIVES, *_ALIASES], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown objective {name!r}{hint}", f"use one or two of {', '.join(OBJECTIVES)}")
    if not 1 <= len(names) <= 2 or len(set(names)) != len(names):
        raise ConfigError(f"--objective {text!r} names {len(names)} measures", "give one, or two distinct ones")
    return tuple(OBJECTIVES[n] for n in names)


@dataclass(frozen=True)
class TuneSpec:
    """A search: what is tuned, on what, towards what; equal specs are the same study."""

    strategy: str
    config: RunConfig
    space: tuple[tuple[str, str], ...]  # (parameter, its space as text), in the order searched
    objectives: tuple[Objective, ...]
    trials: int
    seeds: tuple[int, ...] = (0,)
    final_seeds: tuple[int, ...] = (0, 1, 2)
    strategy_sets: dict[str, str] = field(default_factory=dict)
    scenario: str = "clevr-humans"
    scenario_sets: dict[str, str] = field(default_factory=dict)
    study: str | None = None

    def spaces(self) -> dict[str, Space]:
        return {name: parse_space(text, name) for name, text in self.space}

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def study_name(self) -> str:
        """`--study`, or one derived from everything that makes two searches comparable (not the trial count, so
        a longer search continues a shorter one)."""
        if self.study:
            return self.study
        identity = {
            "strategy": [self.strategy, self.strategy_sets],
            "scenario": [self.scenario, self.scenario_sets],
            "config": {k: v for k, v in self.config.to_dict().items() if k != "seed"},
            "space": self.space,
            "objectives": [o.name for o in self.objectives],
            "seeds": self.seeds,
        }
        return f"{self.scenario_name()}-{self.strategy_name()}-{checkpoints.digest(identity, 10)}"

    def strategy_name(self) -> str:
        return resolve(self.strategy).name

    def scenario_name(self) -> str:
        return self.scenario_instance().name

    def scenario_instance(self) -> Scenario:
        return load_scenario(self.scenario, self.scenario_sets)

    def materialize(self, params: dict[str, Any], seed: int, strategy: str | None = None) -> tuple:
        """A run's config, strategy and scenario: the fixed settings with the trial's parameters on top."""
        config = replace(self.config, seed=seed)
        scenario = self.scenario_instance()
        config.train.check_experiences(checked_names(scenario))
        sets = self.strategy_sets if strategy is None else {}
        chosen: Strategy = instantiate(resolve(strategy or self.strategy), sets | params)
        return config, chosen, scenario


def suggest(spec: TuneSpec, trial: Any) -> dict[str, Any]:
    integers = integer_fields(resolve(spec.strategy))
    return {name: space.suggest(trial, name, name in integers) for name, space in spec.spaces().items()}


def storage_url(explicit: str | None, uri: str) -> str:
    """`--storage`, or SQLite beside a SQLite MLflow store (else in the working folder)."""
    if explicit:
        return explicit
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).with_name('optuna.db')}"
    return f"sqlite:///{Path.cwd() / 'optuna.db'}"


def open_storage(url: str):
    """The study's storage, reached now: an unreachable one is one line before anything is written."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ConfigError(f"the Optuna storage {url} cannot be reached: {folder} is no folder", "fix --storage")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=_HEARTBEAT_S,
                grace_period=_GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"the Optuna storage {url} cannot be reached ({reason})",
            "start that database, or give another --storage (default: SQLite beside the MLflow store)",
        ) from None


def load_study(spec: TuneSpec, storage, worker: int = 0):
    """The study (made on first use), with a TPE sampler seeded by how far the search has got, so a resumed or
    second worker does not draw the first trials' parameters again, and the experience-rung median pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    single = not spec.multi
    pruner = optuna.pruners.MedianPruner(n_warmup_steps=0) if single else optuna.pruners.NopPruner()
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.study_name(),
            pruner=pruner,
            directions=[o.direction for o in spec.objectives],
            load_if_exists=True,
        )
    except ValueError as exc:  # an existing study of that name optimises other directions
        raise ConfigError(f"study {spec.study_name()!r}: {exc}", "give another --study") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(seed=SAMPLER_SEED + 1000 * worker + len(study.trials))
    if spec.multi:
        study.set_metric_names([o.name for o in spec.objectives])
    return study


def finished(study) -> int:
    """Trials that count towards `--trials`: complete, pruned, or failed by their own error (not a dead process)."""
    from optuna.trial import TrialState

    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and "error" in t.user_attrs)
        for t in study.trials
    )


class _Rungs:
    """Reports a trial's validation accuracy after each experience (step: seed index × experiences + j), and stops
    the run once the pruner says so. A minimised objective's study hears it negated: lower is better there."""

    def __init__(self, trial: Any, seed_index: int, experiences: int, sign: float) -> None:
        self.trial, self.offset, self.sign = trial, seed_index * experiences, sign

    def __call__(self, i: int, measured: Any) -> None:
        import optuna

        if not measured.validation:
            return
        seen = measured.validation[: i + 1]
        value = sum(seen) / len(seen)
        self.trial.report(self.sign * value, step=self.offset + i)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {100 * value:.1f}% after experience {i} is below the median")


def run_trial(spec: TuneSpec, parent_id: str, experiment: str, trial: Any) -> float | list[float]:
    """One trial: the scenario run on each seed with the trial's parameters; the validation objective(s), averaged
    over the seeds."""
    params = suggest(spec, trial)
    per_seed, run_ids = [], []
    experiences = len(checked_names(spec.scenario_instance()))
    sign = 1.0 if spec.objectives[0].direction == "maximize" else -1.0
    for k, seed in enumerate(spec.seeds):
        tags = {TRIAL_TAG: str(trial.number)}
        observer = None if spec.multi else _Rungs(trial, k, experiences, sign)
        figures, run_id = run_child(spec, params, seed, parent_id, experiment, tags, observer, trial=trial)
        per_seed.append({k: v for k, v in figures.items() if k.startswith(metric_names.VALIDATION_PREFIX)})
        run_ids.append(run_id)
    validation = {name: measures.mean([f[name] for f in per_seed if name in f]) for name in per_seed[0]}
    trial.set_user_attr("validation", validation)
    missing = [o.metric for o in spec.objectives if validation.get(o.metric, float("nan")) != validation.get(o.metric)]
    if missing:
        error = f"the runs logged no {', '.join(missing)} (no validation stream, or nothing to measure it on)"
        trial.set_user_attr("error", error)
        raise ConfigError(error, "keep scenario.validation above 0, and a scenario of two experiences or more")
    values = [validation[o.metric] for o in spec.objectives]
    _mark(run_ids, "complete", {OBJECTIVE_METRIC: values[0]} | _named_values(spec, values))
    return values[0] if not spec.multi else values


def _named_values(spec: TuneSpec, values: list[float]) -> dict[str, float]:
    return {f"{OBJECTIVE_METRIC}/{o.name}": v for o, v in zip(spec.objectives, values, strict=True)}


def _mark(run_ids: list[str], state: str, metrics: dict[str, float]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    for run_id in run_ids:
        client.set_tag(run_id, STATE_TAG, state)
        client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])


def run_child(
    spec: TuneSpec,
    params: dict[str, Any],
    seed: int,
    parent_id: str,
    experiment: str,
    tags: dict[str, str],
    observer: Any = None,
    *,
    trial: Any = None,
    strategy: str | None = None,
) -> tuple[dict[str, float], str]:
    """One run as a child of the tune's parent run, its console output kept as its `run.log` artifact; its figures.

    A pruned or failed trial's run ends KILLED or FAILED with its state tagged, and leaves no checkpoint."""
    import optuna
    from mlflow import MlflowClient

    from clbench.run.log import summary_metrics
    from clbench.run.loop import run

    client = MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    config, chosen, scenario = spec.materialize(params, seed, strategy)
    name = tracking.run_name(chosen.name, scenario.name, params, seed)
    name = f"trial {tags[TRIAL_TAG]} · {name}" if TRIAL_TAG in tags else f"final · {name}"
    child_tags = {PARENT_TAG: parent_id, STUDY_TAG: spec.study_name(), KIND_TAG: "trial" if trial else "final"}
    run_id = client.create_run(experiment_id, run_name=name, tags=child_tags | tags).info.run_id
    if trial is not None:
        trial.set_user_attr("run_ids", [*trial.user_attrs.get("run_ids", []), run_id])
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            specs = {"strategy_spec": strategy or spec.strategy, "scenario_spec": spec.scenario}
            result = run(
                config,
                chosen,
                scenario,
                experiment=experiment,
                progress=False,
                run_id=run_id,
                observer=observer,
                **specs,
            )
    except optuna.TrialPruned:
        _ended(client, run_id, log, "pruned", "KILLED")
        raise
    except Exception as exc:
        error = exc.one_line() if isinstance(exc, ClbenchError) else f"{type(exc).__name__}: {exc}"
        if trial is not None:
            trial.set_user_attr("error", error[:2000])
        client.set_tag(run_id, ERROR_TAG, error[:5000])
        _ended(client, run_id, log, "failed", "FAILED")
        raise
    client.log_text(run_id, log.getvalue(), "run.log")
    return summary_metrics(result), run_id


def _ended(client, run_id: str, log: io.StringIO, state: str, status: str) -> None:
    client.set_tag(run_id, STATE_TAG, state)
    client.log_text(run_id, log.getvalue(), "run.log")
    client.set_terminated(run_id, status)
    checkpoints.delete_run(run_id)  # a trial is never resumed: the study draws another


def tune_worker(
    spec: TuneSpec, quota: int, parent_id: str, experiment: str, uri: str, storage: str, worker: int
) -> int:
    """One process's share of the trials (several share one study through its storage); how many it ran."""
    import functools

    tracking.configure(uri)
    study = load_study(spec, open_storage(storage), worker)
    objective = functools.partial(run_trial, spec, parent_id, experiment)
    ran = 0

    def said(study, trial) -> None:
        nonlocal ran
        ran += 1
        print(describe_trial(spec, trial), flush=True)

    study.optimize(objective, n_trials=quota, catch=(Exception,), callbacks=[said], gc_after_trial=False)
    return ran


def describe_trial(spec: TuneSpec, trial: Any) -> str:
    """One line per trial as it ends: number, state, parameters and its objective on validation."""
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    state = trial.state.name.lower()
    if trial.values:
        said = ", ".join(f"validation {o.name} {v:.4f}" for o, v in zip(spec.objectives, trial.values, strict=True))
    else:
        said = trial.user_attrs.get("error", "") if state == "fail" else ""
    return f"trial {trial.number} {state}: {params}" + (f": {said}" if said else "")


def parent_run(spec: TuneSpec, experiment: str, command: str, storage: str) -> str:
    """The tune's parent run: the one of an earlier sitting of the same study, or a new one."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = tracking.use_experiment(experiment)
    tracking.describe_experiment(experiment_id)
    earlier = f"tags.`{STUDY_TAG}` = '{spec.study_name()}' and tags.`{KIND_TAG}` = 'tune'"
    if (found := tracking.reopen_latest(client, experiment_id, earlier)) is not None:
        return found
    tags = {STUDY_TAG: spec.study_name(), KIND_TAG: "tune", COMMAND_TAG: command}
    name = f"tune {spec.strategy_name()} · {spec.scenario_name()} · {' '.join(o.name for o in spec.objectives)}"
    parent_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    params = tracking.flatten({k: v for k, v in spec.config.to_dict().items() if k != "seed"}) | {
        "tune.strategy": spec.strategy,
        "tune.scenario": spec.scenario,
        "tune.objectives": ",".join(o.name for o in spec.objectives),
        "tune.seeds": ",".join(map(str, spec.seeds)),
        "tune.final_seeds": ",".join(map(str, spec.final_seeds)),
        "tune.study": spec.study_name(),
        "tune.storage": storage,
    }
    params |= {f"tune.param.{k}": v for k, v in spec.space} | {
        f"strategy.{k}": v for k, v in spec.strategy_sets.items()
    }
    tracking.log_params(parent_id, params | {f"scenario.{k}": v for k, v in spec.scenario_sets.items()})
    return parent_id


def final_key(role: str, seed: int, params: dict[str, Any]) -> str:
    return f"{role}|{seed}|{json.dumps(params, sort_keys=True, default=str)}"


def finished_finals(parent_id: str, experiment: str) -> dict[str, dict[str, float]]:
    """final key → the figures of a final rerun finished in an earlier sitting."""
    import mlflow
    from mlflow import MlflowClient

    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'FINISHED'",
        max_results=10000,
    )
    return {r.data.tags[FINAL_TAG]: dict(r.data.metrics) for r in runs if FINAL_TAG in r.data.tags}


def say(text: str, out=None) -> None:
    print(text, file=out or sys.stdout, flush=True)
