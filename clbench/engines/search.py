"""`clbench tune` from end to end: check, search (trials on one process, a pool or Ray), rerun the chosen values on
the final seeds, and write the summary (`clbench.report.tuning`).

Everything that can be refused is checked before the first write: the strategy, scenario and config of a run,
the objectives, the search space, the MLflow store and the Optuna storage. A sitting that ends early (Ctrl-C, a
kill, `--stop-after`) leaves a study the same command continues; the parent run and the finished final reruns
are found again, so nothing finished is redone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clbench.core.errors import ClbenchError
from clbench.engines.pool import Engine, executor
from clbench.engines.tune import (
    FINAL_TAG,
    TuneSpec,
    final_key,
    finished,
    finished_finals,
    load_study,
    open_storage,
    parent_run,
    run_child,
    say,
    storage_url,
    tune_worker,
)
from clbench.evaluation import names as metric_names
from clbench.report import tracking

ROLE_TAG = "clbench.role"  # on a final rerun: tuned | naive


@dataclass
class TuneOutcome:
    parent_run_id: str
    study_name: str
    finished_trials: int
    chosen: dict[str, Any] = field(default_factory=dict)
    summary: Path | None = None  # the summary folder, once the search is complete
    wall_time_s: float = 0.0


def tune(
    spec: TuneSpec,
    *,
    jobs: int = 1,
    engine: Engine | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    out: Path = Path("results/tuning"),
    command: str = "",
    stop_after: int | None = None,
) -> TuneOutcome:
    """Run the trials not finished yet, then (once all are) the final reruns and the summary in
    `out/<scenario>/<strategy>/`."""
    started = time.perf_counter()
    engine = engine or Engine()
    uri = tracking.tracking_uri(tracking_uri)
    tracking.configure(uri)
    for seed in (*spec.seeds, *spec.final_seeds):  # a config, strategy or scenario that cannot run: one line now
        spec.materialize({}, seed)
    url = storage_url(storage, uri)
    ray_pool = engine.connect(uri)
    try:
        study = load_study(spec, open_storage(url))
        tracking.prepare_store(uri)
        experiment = experiment or f"{spec.scenario_name()}-tuning"
        tracking.end_orphaned_runs(experiment)
        parent_id = parent_run(spec, experiment, command, url)
        outcome = TuneOutcome(parent_id, spec.study_name(), finished(study))
        _sitting(spec, study, outcome, ray_pool, jobs, experiment, uri, url, out, stop_after)
    finally:
        if ray_pool is not None:
            ray_pool.close()
    outcome.wall_time_s = time.perf_counter() - started
    return outcome


def _sitting(spec, study, outcome, ray_pool, jobs, experiment, uri, url, out, stop_after) -> None:
    """This sitting's trials, then, once the study has all of them, the final reruns and the summary."""
    from mlflow import MlflowClient

    status = "FAILED"
    try:
        remaining = max(0, spec.trials - outcome.finished_trials)
        quota = remaining if stop_after is None else min(remaining, stop_after)
        say(f"study {spec.study_name()}: {outcome.finished_trials} of {spec.trials} trials finished; running {quota}")
        if quota:
            _search(spec, quota, ray_pool, jobs, outcome.parent_run_id, experiment, uri, url)
        study = load_study(spec, open_storage(url))
        outcome.finished_trials = finished(study)
        if outcome.finished_trials < spec.trials:
            say(f"{outcome.finished_trials} of {spec.trials} trials finished; the same command continues the search")
            status = "KILLED"
            return
        _conclude(spec, study, outcome, experiment, url, out)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        MlflowClient().set_terminated(outcome.parent_run_id, status)


def _search(spec, quota, ray_pool, jobs, parent_id, experiment, uri, url) -> None:
    """The trials, in this process (one job), or split among `jobs` pool processes or the Ray cluster's slots."""
    if ray_pool is None and jobs == 1:
        tune_worker(spec, quota, parent_id, experiment, uri, url, 0)
        return
    workers = ray_pool.capacity() if ray_pool is not None else jobs
    shares = [quota // workers + (k < quota % workers) for k in range(workers)]
    with executor(ray_pool, workers) as pool:
        futures = [
            pool.submit(tune_worker, spec, share, parent_id, experiment, uri, url, k)
            for k, share in enumerate(shares)
            if share
        ]
        for future in futures:
            future.result()


def _conclude(spec, study, outcome, experiment, url, out) -> None:
    """The chosen values rerun on the final seeds (and naive beside them), the summary written and logged."""
    from mlflow import MlflowClient

    from clbench.report.tuning import TuningReport, write_summary

    trial = _chosen(spec, study)
    if trial is None:
        raise ClbenchError(
            f"no trial of study {spec.study_name()} completed", "read the failed trials' errors in MLflow"
        )
    outcome.chosen = dict(trial.params)
    say(f"chosen: trial {trial.number}: {outcome.chosen}")
    finals = _finals(spec, outcome.chosen, outcome.parent_run_id, experiment)
    scenario = spec.scenario_instance()
    report = TuningReport(
        scenario=scenario.name,
        strategy=spec.strategy_name(),
        objectives=[(o.name, o.direction) for o in spec.objectives],
        spaces=spec.spaces(),
        study=study,
        chosen=outcome.chosen,
        chosen_number=trial.number,
        finals=finals,
        last_test=scenario.experience_names()[-1],
        command=MlflowClient().get_run(outcome.parent_run_id).data.tags.get(tracking.COMMAND_TAG, ""),
        study_name=spec.study_name(),
        storage=url,
        trial_seeds=spec.seeds,
        objective_metrics={o.name: o.metric for o in spec.objectives},
    )
    folder = Path(out) / scenario.name / spec.strategy_name()
    write_summary(report, folder)
    MlflowClient().log_artifacts(outcome.parent_run_id, str(folder), "tuning")
    outcome.summary = folder
    say(f"summary: {folder / 'summary.md'}")


def _chosen(spec: TuneSpec, study):
    """The best trial; with two objectives, the Pareto front's best on the first."""
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        return None
    if not spec.multi:
        return study.best_trial
    sign = 1 if spec.objectives[0].direction == "maximize" else -1
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def _finals(spec: TuneSpec, chosen: dict[str, Any], parent_id: str, experiment: str) -> pd.DataFrame:
    """The chosen values and naive fine-tuning on each final seed, as child runs; those finished before are read
    back instead of run again."""
    done = finished_finals(parent_id, experiment)
    roles = [("tuned", None, chosen)] + ([("naive", "naive", {})] if spec.strategy_name() != "naive" else [])
    rows = []
    for role, strategy, params in roles:
        for seed in spec.final_seeds:
            key = final_key(role, seed, params)
            figures = done.get(key)
            if figures is None:
                tags = {FINAL_TAG: key, ROLE_TAG: role}
                figures, _ = run_child(spec, params, seed, parent_id, experiment, tags, strategy=strategy)
            name = spec.strategy_name() if strategy is None else strategy
            rows.append({"role": role, "strategy": name, "seed": seed} | figures)
            accuracy = figures.get(metric_names.AVERAGE_ACCURACY, 0)
            say(f"final {role} seed {seed}: test average accuracy {100 * accuracy:.1f}%")
    return pd.DataFrame(rows)
