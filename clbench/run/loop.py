"""One run: build, restore, train and evaluate each experience, results."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pandas as pd
import torch
from avalanche.evaluation.metrics import (
    accuracy_metrics,
    bwt_metrics,
    forgetting_metrics,
    loss_metrics,
)
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from clbench.config import RunConfig
from clbench.core.errors import ConfigError
from clbench.evaluation import cost, measures, references
from clbench.evaluation import names as metric_names
from clbench.evaluation import periodic as continual
from clbench.evaluation.metrics import (
    TEST_STREAM,
    QuestionTypeAccuracy,
    accuracy_key,
    type_metric_name,
)
from clbench.evaluation.validation import ValidationEvaluation
from clbench.report import tracking
from clbench.run.build import (
    build_benchmark,
    build_model,
    describe_inputs,
    inputs_of,
    place_features,
    resolve_device,
)
from clbench.run.context import RunContext
from clbench.run.log import film_tables, log_params, log_result
from clbench.run.result import Measured, RunResult
from clbench.run.shipped import find_shipped, shipped_params, shipped_state
from clbench.scenario.contract import DEFAULT as DEFAULT_SCENARIO
from clbench.scenario.contract import DEFAULT_VALIDATION, VALIDATION, Scenario
from clbench.scenario.contract import experience_names as checked_names
from clbench.scenario.contract import load as load_scenario
from clbench.strategy import applicable
from clbench.strategy.contract import (
    Strategy,
    StrategyRun,
    describe_shortcut,
    plugins_of,
    shortcut,
    takes_cache,
)
from clbench.training import checkpoints, distributed
from clbench.training.template import FiLMTemplate, ProgressBar, film_template, make_optimizer


def run(
    config: RunConfig,
    strategy: Strategy,
    scenario: Scenario | None = None,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    out=None,
    run_id: str | None = None,
    resume: checkpoints.RunCheckpoint | None = None,
    strategy_spec: str | None = None,
    scenario_spec: str | None = None,
    observer: Callable[[int, Measured], None] | None = None,
) -> RunResult | None:
    """Train experience by experience, evaluating the whole test stream after each; log all to MLflow.

    `run_id` continues a run created beforehand (a sweep creates its cells' runs, tagged with their parent);
    `resume` continues an interrupted run from its checkpoint, in the same MLflow run. `observer(i, measured)`
    hears each experience's evaluation as it ends (a tuning trial reports it, and may stop the run). Under torchrun
    (`clbench.training.distributed`), every rank calls this; rank 0 alone logs, evaluates and returns the result.
    """
    started = time.perf_counter()
    scenario = scenario or load_scenario(DEFAULT_SCENARIO)
    ctx = _build(config, strategy, scenario, experiment, run_name, tracking_uri, progress, resume)
    ctx.specs, ctx.observer = (strategy_spec, scenario_spec), observer
    with (
        _mlflow_run(ctx.experiment, ctx.run_name, resume.run_id if resume else run_id) as ctx.run_id,
        ExitStack() as lock,
    ):
        _restore(ctx, lock)
        measured, train_seconds = _train_each(ctx, lock)
        if not ctx.main:
            return None
        result = _results(ctx, measured, train_seconds, time.perf_counter() - started)
    print(result.summary(), file=out or sys.stdout)
    return result


def _build(
    config: RunConfig,
    strategy: Strategy,
    scenario: Scenario,
    experiment: str | None,
    run_name: str | None,
    tracking_uri: str | None,
    progress: bool,
    resume: checkpoints.RunCheckpoint | None,
) -> RunContext:
    """Data, store and model, checked before anything is written: bad input leaves no store behind."""
    names = checked_names(scenario)
    config.train.check_experiences(names)  # before any data is generated or read
    main = distributed.is_main()
    if distributed.active():
        _check_distributable(config, strategy)
    device = resolve_device(distributed.device() or config.device)
    uri = tracking.tracking_uri(tracking_uri)
    if main:
        tracking.configure(uri)
    experiment = experiment or scenario.name
    RNGManager.set_random_seeds(config.seed)
    with distributed.main_first():  # one rank generates the data, the others read it
        # a resumed run reads what it started with: features that appeared since would change its arithmetic
        bench = build_benchmark(config, scenario, progress and main, feature_cache=inputs_of(resume) != "pixels")
    place_features(config, bench, device, progress and main)
    if main and config.model.stem == "resnet101":
        print(describe_inputs(config, bench), file=sys.stderr)
    if bench.experience_names != names:  # a user's scenario whose build disagrees with what it announced
        raise ConfigError(
            f"scenario {scenario.name!r} announced experiences {names} but built {bench.experience_names}",
            "return the same names from experience_names() as the Parts given to assemble()",
        )
    RNGManager.set_random_seeds(config.seed)
    model = build_model(config, bench, device)
    optimizer = make_optimizer(config, model)
    plugins = plugins_of(strategy, StrategyRun(model, optimizer, config, device, names, bool(bench.valid_stream)))
    applicable.check(plugins, validation=bool(bench.valid_stream), device=device)
    own = strategy.experience0_identity() | applicable.experience0_identity(plugins)
    shipped = find_shipped(config, scenario, bench, strategy, own, main, resume)  # refuses weights that do not fit
    if main:
        tracking.prepare_store(uri)
        tracking.end_orphaned_runs(experiment)
    key = checkpoints.experience0_key(config, bench.fingerprint, checkpoints.scenario_identity(scenario), own)
    shown = {k: v for k, v in scenario.params().items() if (k, v) != (VALIDATION, DEFAULT_VALIDATION)}
    run_name = run_name or tracking.run_name(tracking.strategy_label(strategy), scenario.name, shown, config.seed)
    print(f"{describe_shortcut(strategy)}.", file=sys.stderr)
    if shipped is not None and not takes_cache(strategy):  # it trains experience 0 on the shipped weights
        model.load_state_dict(shipped.weights)
    reuse = config.train.reuse_experience0 and takes_cache(strategy)
    return RunContext(
        config, strategy, scenario, names, bench, model, device, main, progress and main, experiment, run_name,
        uri, key, reuse, shipped, resume, (None, None), optimizer, plugins,
    )  # fmt: skip


def _restore(ctx: RunContext, experience0_lock: ExitStack) -> None:
    """The run's checkpoint: its own (a resumed run), or a new one that starts from the experience-0 cache or a
    shipped model where they apply; then the plugins and the template around it."""
    if ctx.resume is None:
        if ctx.reuse and ctx.main:  # runs sharing experience 0 (a sweep's cells) wait here while one of them trains it
            experience0_lock.enter_context(checkpoints.locked(f"experience0-{ctx.key}"))
        cached = distributed.from_main(lambda: checkpoints.load(ctx.key) if ctx.reuse else None)
        if ctx.shipped is not None and takes_cache(ctx.strategy):  # the shipped model is experience 0's end
            cached = shipped_state(ctx.model, ctx.shipped.weights, ctx.config)
        meta = {"experiment": ctx.experiment, "run_name": ctx.run_name, "tracking_uri": ctx.uri}
        meta |= _what_to_resume(ctx)
        meta["pretrained"] = ctx.shipped.record.name if ctx.shipped is not None else None
        ctx.checkpoint = checkpoints.RunCheckpoint(ctx.run_id, meta, boundaries=[cached] if cached is not None else [])
        if ctx.main:
            log_params(ctx, cached is not None)
            tracking.log_params(ctx.run_id, shipped_params(ctx.shipped.record if ctx.shipped is not None else None))
    else:
        ctx.checkpoint = ctx.resume.resumed_as(shortcut(ctx.strategy))
        print(f"resuming run {ctx.run_id} at {_position(ctx.resume, ctx.names)}", file=sys.stderr)
    ctx.experience0_trained = not ctx.checkpoint.boundaries and ctx.config.train.epochs_of(0) > 0
    ctx.checkpointer = checkpoints.Checkpointer(ctx.checkpoint, ctx.key if ctx.reuse else None, write=ctx.main)
    ctx.logger = tracking.MLflowLogger(ctx.run_id) if ctx.main else tracking.NullLogger()
    ctx.watcher = _continual_evaluation(ctx, ctx.bench.test_names, ctx.bench.test_stream) if ctx.main else None
    if ctx.main and ctx.bench.validation_datasets:
        valid = list(zip(ctx.bench.validation_names, ctx.bench.validation_datasets, strict=True))
        ctx.validator = ValidationEvaluation(valid, ctx.config.train.eval_batch_size)
        ctx.valid_watcher = _continual_evaluation(ctx, ctx.bench.validation_names, ctx.bench.valid_stream, valid=True)
    ctx.template = _template(ctx)


def _train_each(ctx: RunContext, experience0_lock: ExitStack) -> tuple[list[Measured], float]:
    """Each experience trained (or replayed) and the whole test stream evaluated after it; an offline strategy
    trains once, on all of them."""
    measured: list[Measured] = []
    stream = [list(ctx.bench.train_stream)] if ctx.strategy.offline() else list(ctx.bench.train_stream)
    train_seconds = 0.0
    cost.reset_peak_rss()
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    with _saying_how_to_resume(ctx.run_id, ctx.logger):
        for i, experience in enumerate(stream):
            with ctx.logger.muted(i < ctx.checkpoint.logged):  # a resumed run's finished experiences: logged already
                begun = time.perf_counter()
                _train(ctx, i, experience)
                train_seconds += time.perf_counter() - begun
                experience0_lock.close()
                if ctx.main:  # the other ranks wait for it at the next experience's first gradient exchange
                    measured.append(_evaluate(ctx, ctx.rows[i]))
                    if ctx.observer is not None:
                        ctx.observer(i, measured[-1])
            ctx.checkpointer.experience_done(i)
    return measured, train_seconds


def _results(ctx: RunContext, measured: list[Measured], train_seconds: float, wall_time_s: float) -> RunResult:
    """The result of the run: the accuracy matrix and its measures, cost, references; logged and checkpoint gone."""
    owned = [ctx.checkpointer, ctx.logger, ctx.film_stats, ctx.predictions, ctx.watcher, ctx.valid_watcher]
    spent = _cost(ctx.template, owned, train_seconds, ctx.device)
    watchers = [w for w in (ctx.watcher, ctx.valid_watcher) if w is not None]
    if watchers:
        spent[metric_names.CONTINUAL_TIME] = sum(w.seconds for w in watchers)
    result = _result(ctx, measured, wall_time_s, spent)
    result.curves = ctx.checkpoint.curves
    result.continual, result.continual_summary = continual.summarise(ctx.checkpoint.curves, result.accuracy)
    if ctx.validator is not None:
        rows = pd.Index(ctx.rows, name="after")
        columns = pd.Index(ctx.validator.names, name="validation")
        result.validation = pd.DataFrame([m.validation for m in measured], index=rows, columns=columns)
        result.validation_summary = continual.summarise(ctx.checkpoint.valid_curves, result.validation)[1]
    if ctx.config.eval.references and not ctx.strategy.offline():
        make_model = functools.partial(build_model, ctx.config, ctx.bench, ctx.device)
        result.references = references.accuracies(ctx.config, ctx.scenario, ctx.bench, ctx.device, make_model)
    # the template's model: GDumb replaces it
    log_result(ctx, result)
    checkpoints.delete_run(ctx.run_id)  # finished: the final model is an MLflow artifact now
    return result


@contextmanager
def _mlflow_run(experiment: str, run_name: str, run_id: str | None) -> Iterator[str]:
    """The run's MLflow run, on rank 0; the other ranks of a torchrun job learn its id and touch MLflow not at all."""
    if not distributed.is_main():
        yield distributed.from_main(lambda: None)
        return
    with tracking.mlflow_run(experiment, run_name, run_id) as started:
        yield distributed.from_main(lambda: started)


def _check_distributable(config: RunConfig, strategy: Strategy) -> None:
    """What torchrun cannot run, said before any work starts."""
    distributed.per_rank_batch(config.train.batch_size)
    if config.eval.references:
        raise ConfigError(
            "--references is not available under torchrun (the references train on one process)",
            "leave --references out here, and run them in a single process or in a sweep",
        )
    own_loop = strategy.template is not None and strategy.template.__name__ not in distributed.DATA_PARALLEL_TEMPLATES
    if own_loop or not strategy.data_parallel:
        why = f"runs its own training loop ({strategy.template.__name__})" if own_loop else "acts on each rank's batch"
        raise ConfigError(
            f"strategy {strategy.name!r} {why}, which torchrun cannot make data-parallel",
            "run it in a single process (python -m clbench run), or spread a sweep over a Ray cluster instead",
        )


def _what_to_resume(ctx: RunContext) -> dict[str, Any]:
    """What `--resume` rebuilds the run from: its config, and how to find and build its strategy and scenario."""
    strategy_spec, scenario_spec = ctx.specs
    return {
        "config": ctx.config.to_dict(),
        "inputs": ctx.bench.inputs,
        "strategy": {"spec": strategy_spec or ctx.strategy.name, "params": ctx.strategy.params()},
        "scenario": {"spec": scenario_spec or ctx.scenario.name, "params": ctx.scenario.params()},
    }


@contextmanager
def _saying_how_to_resume(run_id: str, logger: Any) -> Iterator[None]:
    """Whatever stops the run (Ctrl-C, an error), flush its metrics and print the command that continues it."""
    try:
        yield
    except BaseException:
        logger.flush()
        if checkpoints.run_path(run_id).is_file():
            print(
                f"run {run_id} saved at its last finished epoch; continue it with: "
                f"python -m clbench run --resume {run_id}",
                file=sys.stderr,
            )
        raise


def _loader_args(config: RunConfig, device: torch.device) -> dict[str, Any]:
    workers = config.train.workers_on(device)
    return {"num_workers": workers, "persistent_workers": workers > 0}


def _template(ctx: RunContext) -> FiLMTemplate:
    """The Avalanche template: the FiLM model, Adam, the strategy's plugins and our evaluator (our metrics join
    Avalanche's there)."""
    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True, experience=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        QuestionTypeAccuracy(ctx.bench.type_names),
        ctx.film_stats,
        ctx.predictions,
        loggers=[ctx.logger] if ctx.main else [],
    )
    own = ctx.plugins
    plugins = [
        ctx.checkpointer,  # first: it must see an experience's end before any strategy hook changes state
        *own,
        ctx.checkpointer.epoch_saver(),  # after the strategy's epoch-end hooks, before the evaluator logs the epoch
        *(w for w in (ctx.watcher, ctx.valid_watcher) if w is not None),  # after the strategy's: their hooks ran
        *([distributed.AgreementCheck(own)] if distributed.active() else []),
        *([ProgressBar(ctx.bench.experience_names)] if ctx.progress else []),
    ]
    return film_template(
        ctx.config,
        ctx.model,
        ctx.device,
        epochs=ctx.config.train.epochs_of(0),
        base=ctx.strategy.template,
        train_mb_size=distributed.per_rank_batch(ctx.config.train.batch_size),
        optimizer=ctx.optimizer,
        plugins=plugins,
        evaluator=evaluator,
        **_periodic_validation(own) | ctx.strategy.template_args(),
    )


def _periodic_validation(plugins: list[Any]) -> dict[str, Any]:
    """Early stopping reads the validation accuracy Avalanche's periodic evaluation leaves in the evaluator: every
    epoch (or iteration), on the experience's validation set (`_train` passes it)."""
    stopper = applicable.early_stopping(plugins)
    return {} if stopper is None else {"eval_every": 1, "peval_mode": stopper.peval_mode}


def _continual_evaluation(
    ctx: RunContext, names: tuple[str, ...], stream: Any, valid: bool = False
) -> continual.ContinualEvaluation | None:
    """The plugin that watches old test sets (or validation sets) while later experiences train (none for offline
    strategies)."""
    config, bench, checkpoint = ctx.config, ctx.bench, ctx.checkpoint
    if config.eval.every <= 0 or ctx.strategy.offline():
        return None
    return continual.ContinualEvaluation(
        tests=[(name, part.dataset) for name, part in zip(names, stream, strict=True)],
        experience_names=bench.experience_names,
        every=config.eval.every,
        subset=config.eval.subset,
        batch_size=config.train.eval_batch_size,
        seed=config.seed,
        curves=checkpoint.valid_curves if valid else checkpoint.curves,
        logger=ctx.logger,
        metric=metric_names.validation_continual if valid else metric_names.continual,
    )


def _train(ctx: RunContext, i: int, experience: Any) -> None:
    """Experience i: trained in full, continued from a mid-experience checkpoint, or replayed from its end.

    A strategy of the `training` kind is never replayed: its resumed checkpoint was `restarted()`.
    """
    template, checkpointer, watcher, checkpoint, config = (
        ctx.template, ctx.checkpointer, ctx.watcher, ctx.checkpoint, ctx.config
    )  # fmt: skip
    name, resumed = ctx.rows[i], ctx.resume is not None
    template.train_epochs = config.train.epochs_of(i)
    _set_learning_rate(ctx, i)
    if i < len(checkpoint.boundaries):  # trained before (cache or checkpoint): only its end-of-experience hooks
        shipped = i == 0 and checkpoint.meta.get("pretrained")
        what = "replaying its end" if resumed else f"starting from {shipped}" if shipped else "reusing the cached model"
        print(f"experience {i} ({name}): {what}", file=sys.stderr)
        checkpointer.restore_at_start(checkpoint.boundaries[i])
        template.train_epochs = 0
    elif checkpoint.current is not None and checkpoint.experience == i:
        checkpointer.restore_at_start(checkpoint.current, checkpoint.epochs_done)
        template.train_epochs -= checkpoint.epochs_done
        if watcher is not None:
            watcher.start_at(checkpoint.epochs_done)
    template.train(experience, eval_streams=_validated(ctx, i), **_loader_args(config, template.device))
    _say_early_stop(ctx, i, template)


def _validated(ctx: RunContext, i: int) -> list[Any] | None:
    """What Avalanche's periodic evaluation reads during experience i, where early stopping asked for it: the
    experience's validation set (all of them for an offline strategy)."""
    if ctx.template.eval_every <= 0:
        return None
    return [list(ctx.bench.valid_stream) if ctx.strategy.offline() else ctx.bench.valid_stream[i]]


def _set_learning_rate(ctx: RunContext, i: int) -> None:
    """Experience i's learning rate where the config changes it (`--set train.lr=1e-3,1e-4`); between such changes
    a scheduler's plugin steers it, and resets to it (its base rate) at an experience's end."""
    train, optimizer = ctx.config.train, ctx.template.optimizer
    lr = train.lr_of(i)
    if i > 0 and lr == train.lr_of(i - 1):
        return
    for group in optimizer.param_groups:
        group["lr"] = lr
    for scheduler in applicable.lr_schedulers(ctx.plugins):
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)


def _say_early_stop(ctx: RunContext, i: int, template: FiLMTemplate) -> None:
    """A plugin that stopped training early (early stopping) is said, and logged: `train.epochs` is the plan."""
    planned, trained = ctx.config.train.epochs_of(i), template.clock.train_exp_epochs
    if template.train_epochs == 0 or trained >= planned or not ctx.main:
        return
    print(f"experience {i} ({ctx.rows[i]}): stopped after {trained} of {planned} epochs by a plugin", file=sys.stderr)
    ctx.logger.log_single_metric(metric_names.EPOCHS_TRAINED, trained, i)


def _evaluate(ctx: RunContext, after: str) -> Measured:
    """The whole test stream: accuracy per test set, per question type where a set holds several, and FiLM
    (leaving the random state as it found it: `LoopAdditions.eval`)."""
    bench = ctx.bench
    metrics = ctx.template.eval(bench.test_stream, **_loader_args(ctx.config, ctx.device))
    per_type = {}
    for j, test in enumerate(bench.test_names):
        row = {
            name: metrics[metric]
            for name in bench.type_names
            if (metric := type_metric_name(TEST_STREAM, j, name)) in metrics
        }
        if len(row) > 1:  # one type only: the accuracy matrix says it already
            per_type[(after, test)] = row
    accuracy = [metrics[accuracy_key(j)] for j in range(len(bench.test_names))]
    validation = ctx.validator.accuracies(ctx.template) if ctx.validator is not None else []
    return Measured(accuracy, ctx.film_stats.result(), per_type, ctx.predictions.result(), validation)


def _cost(template: FiLMTemplate, run_owned: list[Any], train_seconds: float, device: torch.device) -> dict[str, float]:
    held = cost.held_by(template, run_owned)
    values = {
        metric_names.TRAIN_TIME: train_seconds,
        metric_names.PEAK_RSS: cost.peak_rss_bytes(),
        metric_names.HELD_QUESTIONS: held.questions,
        metric_names.HELD_QUESTION_BYTES: held.question_bytes,
        metric_names.HELD_STATE_BYTES: held.state_bytes,
        metric_names.HELD_BYTES: held.total_bytes,
    }
    if (peak := cost.cuda_peak_bytes(device)) is not None:
        values[metric_names.CUDA_PEAK] = peak
    return {k: float(v) for k, v in values.items()}


def _result(ctx: RunContext, measured: list[Measured], wall_time_s: float, spent: dict[str, float]) -> RunResult:
    bench, run_id = ctx.bench, ctx.run_id
    names, tests = list(ctx.rows), list(bench.test_names)
    accuracy = pd.DataFrame(
        [m.accuracy for m in measured], index=pd.Index(names, name="after"), columns=pd.Index(tests, name="test")
    )
    per_type = pd.DataFrame.from_dict({k: v for m in measured for k, v in m.per_type.items()}, orient="index")
    if not per_type.empty:
        per_type.index = pd.MultiIndex.from_tuples(per_type.index, names=["after", "test"])
    flips = {}
    for j, test in enumerate(tests[: len(names) - 1]):  # each earlier test set: when learned → at the end
        before, after = measured[j].predictions.get(j), measured[-1].predictions.get(j)
        if before is not None and after is not None:
            negative, positive = measures.flip_rates(before[0], after[0], after[1])
            flips[test] = {"negative": negative, "positive": positive}
    return RunResult(
        run_id=run_id,
        accuracy=accuracy,
        per_type=per_type,
        flips=pd.DataFrame.from_dict(flips, orient="index").rename_axis("test"),
        type_forgetting=measures.type_forgetting(per_type, names, tests),
        majority_baseline=bench.majority_baseline,
        wall_time_s=wall_time_s,
        sizes=bench.sizes,
        experience0_trained=ctx.experience0_trained,
        cost=spent,
        **film_tables([m.film for m in measured], names, tests),
    )


def _position(checkpoint: checkpoints.RunCheckpoint, names: tuple[str, ...]) -> str:
    name = names[min(checkpoint.experience, len(names) - 1)]
    return f"experience {checkpoint.experience} ({name}), after {checkpoint.epochs_done} finished epoch(s)"
