"""One run: a scenario's benchmark + FiLM + strategy plugins + evaluator, trained experience by experience.

`run` reads top to bottom: build (data, store, model) → restore (checkpoint or experience-0 cache) → train and
evaluate each experience → results, logged to MLflow.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from avalanche.evaluation.metrics import (
    accuracy_metrics,
    bwt_metrics,
    forgetting_metrics,
    loss_metrics,
)
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from clbench import (
    checkpoints,
    continual,
    cost,
    distributed,
    measures,
    metric_names,
    plots,
    pretrained,
    references,
    tracking,
)
from clbench.benchmark import Benchmark, BuildContext
from clbench.config import RunConfig
from clbench.data.features import FeatureBank
from clbench.errors import ConfigError
from clbench.film import FiLM, ResNetStem, count_parameters, resnet_backbone
from clbench.metrics import (
    TEST_STREAM,
    FiLMSnapshot,
    FiLMStatistics,
    Predictions,
    QuestionTypeAccuracy,
    accuracy_key,
    film_drift,
    type_metric_name,
)
from clbench.scenario import DEFAULT as DEFAULT_SCENARIO
from clbench.scenario import PREFIX as SCENARIO_PREFIX
from clbench.scenario import Scenario
from clbench.scenario import experience_names as checked_names
from clbench.scenario import load as load_scenario
from clbench.strategy import Strategy, describe_shortcut, shortcut, takes_cache
from clbench.training import FiLMTemplate, ProgressBar, amp_dtype, template_class


@dataclass
class RunResult:
    """What a run measured; the same numbers are in its MLflow run."""

    run_id: str
    accuracy: pd.DataFrame  # R[i][j]: accuracy on test experience j after training experience i
    per_type: pd.DataFrame  # accuracy per question type (rows: after experience i, test experience j)
    majority_baseline: dict[str, float]
    wall_time_s: float
    sizes: dict[str, int] = field(default_factory=dict)
    experience0_trained: bool = True  # False when experience 0 came from the cache
    film: pd.DataFrame = field(default_factory=pd.DataFrame)  # gamma/beta statistics per (after, test, block)
    film_drift: pd.DataFrame = field(default_factory=pd.DataFrame)  # first to last experience, per (test, block)
    film_histograms: pd.DataFrame = field(default_factory=pd.DataFrame)
    cost: dict[str, float] = field(default_factory=dict)  # see clbench.cost; named in metric_names (cost/...)

    continual: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (during, test): min, gap, recovery
    continual_summary: dict[str, float] = field(default_factory=dict)  # min_acc, wc_acc
    curves: dict[str, Any] = field(default_factory=dict)  # the continual-evaluation points (clbench.continual)
    flips: pd.DataFrame = field(default_factory=pd.DataFrame)  # per earlier test set: negative, positive rate
    type_forgetting: pd.DataFrame = field(default_factory=pd.DataFrame)  # earlier test set × question type
    references: dict[str, dict[str, float]] = field(default_factory=dict)  # "scratch"/"joint" → test → accuracy

    # The measures, each defined in clbench.measures.
    @property
    def forgetting(self) -> dict[str, float]:
        """Per test set of an earlier experience: its best accuracy since it was learned minus its final one."""
        return measures.forgetting(self.accuracy)

    @property
    def average_forgetting(self) -> float:
        return measures.mean(self.forgetting) if self.forgetting else 0.0

    @property
    def average_accuracy(self) -> float:
        return measures.average_accuracy(self.accuracy)

    @property
    def learning_accuracy(self) -> float:
        return measures.learning_accuracy(self.accuracy)

    @property
    def backward_transfer(self) -> dict[str, float]:
        """Per test set of an earlier experience j: R[last][j] − R[j][j] (negative: forgotten)."""
        return measures.backward_transfer(self.accuracy)

    @property
    def bwt(self) -> float:
        """BWT: the mean of `backward_transfer`."""
        return measures.mean(self.backward_transfer) if self.backward_transfer else 0.0

    @property
    def normalised_forgetting(self) -> dict[str, float]:
        return measures.normalised_forgetting(self.accuracy, self.majority_baseline)

    @property
    def forward_transfer(self) -> dict[str, float]:
        scratch = self.references.get("scratch")
        return measures.forward_transfer(self.accuracy, scratch) if scratch and len(self.accuracy) > 1 else {}

    @property
    def intransigence(self) -> dict[str, float]:
        joint = self.references.get("joint")
        return measures.intransigence(self.accuracy, joint) if joint and len(self.accuracy) > 1 else {}

    def summary(self) -> str:
        pct = self.accuracy.map(lambda v: f"{100 * v:5.1f}")
        lines = ["Accuracy matrix (%) — rows: after training on, columns: tested on", pct.to_string(), ""]
        base = ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.majority_baseline.items())
        lines.append(f"Majority-answer baseline (test sets): {base}")
        forget = ", ".join(f"{k} {100 * v:+.1f} pts" for k, v in self.forgetting.items())
        average = f" (mean {100 * self.average_forgetting:+.1f})" if len(self.forgetting) > 1 else ""
        if self.forgetting:
            lines.append(f"Forgetting: {forget}{average}    BWT: {100 * self.bwt:+.1f} pts")
        else:
            lines.append("Forgetting: none to measure (one row: trained once, on everything)")
        lines += self._measures_lines()
        if not self.per_type.empty:
            lines += [
                "",
                "Per question type (%):",
                self.per_type.map(lambda v: f"{100 * v:5.1f}").to_string(),
            ]
        if not self.film.empty:
            columns = ["gamma_negative_share", "gamma_near_zero_share", "gamma_mean", "gamma_std", "beta_std"]
            first = self.accuracy.columns[0]
            overall = self.film.xs(("all", first), level=("block", "test"))[columns]
            lines += ["", f"FiLM (gamma, beta) over {first}, all blocks:", overall.round(3).to_string()]
        if not self.film_drift.empty:
            drift = self.film_drift.xs("all", level="block")
            lines += ["", "FiLM drift from the end of the first experience to the last, all blocks:"]
            lines.append(drift.round(3).to_string())
        if self.cost:
            lines.append("\n" + _describe_cost(self.cost))
        lines.append(f"\nWall time: {self.wall_time_s:.1f} s    MLflow run: {self.run_id}")
        return "\n".join(lines)

    def _measures_lines(self) -> list[str]:
        """The measures of clbench.measures, one sentence each."""
        lines = [f"Learning accuracy (each experience right after training on it): {100 * self.learning_accuracy:.1f}%"]
        if self.forgetting:
            normalised = ", ".join(
                f"{k} {v:.2f}" if v == v else f"{k} – (never above it)" for k, v in self.normalised_forgetting.items()
            )
            lines.append(f"Forgetting as a share of what was learned above the majority answer: {normalised}")
        for test, row in self.flips.iterrows():
            lines.append(
                f"{test}: {100 * row['negative']:.1f}% of questions answered right when learned and wrong at the "
                f"end (negative flips), {100 * row['positive']:.1f}% the reverse"
            )
        for name, values in (("Forward transfer", self.forward_transfer), ("Intransigence", self.intransigence)):
            if values:
                lines.append(f"{name}: " + ", ".join(f"{k} {100 * v:+.1f} pts" for k, v in values.items()))
        for (during, test), row in self.continual.iterrows():
            line = (
                f"While {during} trained, {test} fell to {100 * row['min_accuracy']:.1f}% (a stability gap of "
                f"{100 * row['stability_gap']:.1f} pts)"
            )
            if row["recovery_iterations"] == row["recovery_iterations"]:
                line += f", back within 1 pt of its final value {row['recovery_iterations']:.0f} iterations later"
            lines.append(line)
        if self.continual_summary:
            lines.append(
                f"min-ACC {100 * self.continual_summary['min_acc']:.1f}%, "
                f"WC-ACC {100 * self.continual_summary['wc_acc']:.1f}% (De Lange et al. 2023)"
            )
        return lines


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


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available", "use --device auto or cpu")
    return torch.device(requested)


def resolve_data_root(config: RunConfig, scenario: Scenario, progress: bool = True) -> Path:
    """`--data`, or the scenario's generated world (made on first use, reused afterwards)."""
    if config.data.root is not None:
        return Path(config.data.root)
    from clbench.synth import ensure_default_data

    return ensure_default_data(config.data.synth_preset, config.data.synth_seed, progress, world=scenario.world)


def build_benchmark(
    config: RunConfig, scenario: Scenario | None = None, progress: bool = True, *, feature_cache: bool = True
) -> Benchmark:
    """The scenario's benchmark over the run's data (the default scenario when none is given).

    With the resnet101 stem it reads the feature cache where one matches (`feature_cache=False`: pixels always,
    as a resumed run that started from pixels must go on)."""
    scenario = scenario or load_scenario(DEFAULT_SCENARIO)
    context = BuildContext(
        root=resolve_data_root(config, scenario, progress),
        image_size=(config.model.image_height, config.model.image_width),
        seed=config.seed,
        min_word_count=config.data.min_word_count,
        max_train_questions=config.data.max_train_questions,
        max_test_questions=config.data.max_test_questions,
        scene_maps=config.model.stem == "scene",
        features=config.model.stem_weights if config.model.stem == "resnet101" and feature_cache else None,
        progress=progress,
    )
    return scenario.build(context)


def build_model(config: RunConfig, bench: Benchmark, device: torch.device) -> FiLM:
    model = FiLM(bench.first_vocab_size, len(bench.answers), config.model)
    if isinstance(model.stem, ResNetStem) and bench.inputs == "pixels":
        model.stem.attach_backbone(resnet_backbone(config.model.stem_weights))
    if isinstance(model.stem, ResNetStem) and bench.bank is not None:
        model.stem.attach_bank(bench.bank)
    if config.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if config.train.compile:
        model.compile(dynamic=True)  # in place: parameter names, state dicts and checkpoints stay the same
    return model


@dataclass
class _Measured:
    """What the evaluation after one experience gave: a row of the accuracy matrix and its details."""

    accuracy: list[float]
    film: dict[int, FiLMSnapshot]
    per_type: dict[tuple[str, str], dict[str, float]]
    predictions: dict[int, Any] = field(default_factory=dict)  # test experience → [2, questions]: predicted, true


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
) -> RunResult | None:
    """Train experience by experience, evaluating the whole test stream after each; log all to MLflow.

    `run_id` continues a run created beforehand (a sweep creates its cells' runs, tagged with their parent);
    `resume` continues an interrupted run from its checkpoint, in the same MLflow run. Under torchrun
    (`clbench.distributed`), every rank calls this; rank 0 alone logs, evaluates and returns the result.
    """
    started = time.perf_counter()
    scenario = scenario or load_scenario(DEFAULT_SCENARIO)
    names = checked_names(scenario)
    config.train.check_experiences(names)  # before any data is generated or read
    main = distributed.is_main()
    if distributed.active():
        _check_distributable(config, strategy)

    # -- build: data, store, model
    device = resolve_device(distributed.device() or config.device)
    uri = tracking.tracking_uri(tracking_uri)
    if main:
        tracking.configure(uri)
    experiment = experiment or scenario.name
    RNGManager.set_random_seeds(config.seed)
    with distributed.main_first():  # one rank generates the data, the others read it
        # a resumed run reads what it started with: features that appeared since would change its arithmetic
        bench = build_benchmark(config, scenario, progress and main, feature_cache=_inputs_of(resume) != "pixels")
    _place_features(config, bench, device, progress and main)
    if main and config.model.stem == "resnet101":
        print(_describe_inputs(config, bench), file=sys.stderr)
    if bench.experience_names != names:  # a user's scenario whose build disagrees with what it announced
        raise ConfigError(
            f"scenario {scenario.name!r} announced experiences {names} but built {bench.experience_names}",
            "return the same names from experience_names() as the Parts given to assemble()",
        )
    shipped = _shipped(config, scenario, bench, strategy, main, resume)  # refuses weights that do not fit
    if main:
        tracking.prepare_store(uri)  # after the data is known good: bad input leaves no store behind
        tracking.end_orphaned_runs(experiment)
    RNGManager.set_random_seeds(config.seed)
    model = build_model(config, bench, device)
    key = checkpoints.experience0_key(
        config, bench.fingerprint, checkpoints.scenario_identity(scenario), strategy.experience0_identity()
    )
    reuse = config.train.reuse_experience0 and takes_cache(strategy)
    run_name = run_name or tracking.run_name(strategy.name, scenario.name, scenario.params(), config.seed)
    print(f"{describe_shortcut(strategy)}.", file=sys.stderr)
    if shipped is not None and not takes_cache(strategy):  # it trains experience 0 on the shipped weights
        model.load_state_dict(shipped.weights)

    with (
        _mlflow_run(experiment, run_name, resume.run_id if resume else run_id) as run_id,
        ExitStack() as experience0_lock,
    ):
        # -- restore: from the run's own checkpoint, or the experience-0 cache, or nothing
        if resume is None:
            if reuse and main:  # runs sharing experience 0 (a sweep's cells) wait here while one of them trains it
                experience0_lock.enter_context(checkpoints.locked(f"experience0-{key}"))
            cached = distributed.from_main(lambda: checkpoints.load(key) if reuse else None)
            if shipped is not None and takes_cache(strategy):  # the shipped model is experience 0's end
                cached = _shipped_state(model, shipped.weights, config)
            meta = {"experiment": experiment, "run_name": run_name, "tracking_uri": uri}
            meta |= _what_to_resume(config, strategy, scenario, strategy_spec, scenario_spec, bench.inputs)
            meta["pretrained"] = shipped.record.name if shipped is not None else None
            checkpoint = checkpoints.RunCheckpoint(run_id, meta, boundaries=[cached] if cached is not None else [])
            cache_key = key if reuse else ""
            if main:
                _log_params(run_id, config, strategy, scenario, bench, model, device, cache_key, cached is not None)
                tracking.log_params(run_id, _shipped_params(shipped.record if shipped is not None else None))
        else:
            checkpoint = resume.resumed_as(shortcut(strategy))
            print(f"resuming run {run_id} at {_position(resume, names)}", file=sys.stderr)
        experience0_trained = not checkpoint.boundaries and config.train.epochs_of(0) > 0
        checkpointer = checkpoints.Checkpointer(checkpoint, key if reuse else None, write=main)
        film_stats, predictions = FiLMStatistics(), Predictions()
        logger = tracking.MLflowLogger(run_id) if main else tracking.NullLogger()
        watcher = _continual_evaluation(config, bench, strategy, checkpoint, logger) if main else None
        metrics = [film_stats, predictions]
        progress = progress and main
        template = _template(config, model, bench, strategy, checkpointer, watcher, logger, metrics, device, progress)

        # -- train and evaluate each experience (an offline strategy: once, on all of them)
        measured: list[_Measured] = []
        rows = names[-1:] if strategy.offline() else names
        stream = [list(bench.train_stream)] if strategy.offline() else list(bench.train_stream)
        train_seconds = 0.0
        cost.reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with _saying_how_to_resume(run_id, logger):
            for i, experience in enumerate(stream):
                with logger.muted(i < checkpoint.logged):  # a resumed run's finished experiences: logged already
                    begun = time.perf_counter()
                    resumed = resume is not None
                    _train(template, checkpointer, watcher, checkpoint, config, i, experience, rows[i], resumed)
                    train_seconds += time.perf_counter() - begun
                    experience0_lock.close()
                    if main:  # the other ranks wait for it at the next experience's first gradient exchange
                        row = _evaluate(template, bench, film_stats, predictions, rows[i], _loader_args(config, device))
                        measured.append(row)
                checkpointer.experience_done(i)
        if not main:
            return None

        # -- results
        spent = _cost(template, [checkpointer, logger, film_stats, predictions, watcher], train_seconds, device)
        if watcher is not None:
            spent[metric_names.CONTINUAL_TIME] = watcher.seconds
        result = _result(run_id, bench, rows, measured, time.perf_counter() - started, experience0_trained, spent)
        result.curves = checkpoint.curves
        result.continual, result.continual_summary = continual.summarise(checkpoint.curves, result.accuracy)
        if config.eval.references and not strategy.offline():
            make_model = functools.partial(build_model, config, bench, device)
            result.references = references.accuracies(config, scenario, bench, device, make_model)
        _log_result(run_id, result, config, strategy, scenario, template.model, logger)  # GDumb replaces the model
        checkpoints.delete_run(run_id)  # finished: the final model is an MLflow artifact now
    print(result.summary(), file=out or sys.stdout)
    return result


@contextmanager
def _mlflow_run(experiment: str, run_name: str, run_id: str | None) -> Iterator[str]:
    """The run's MLflow run, on rank 0; the other ranks of a torchrun job learn its id and touch MLflow not at all."""
    if not distributed.is_main():
        yield distributed.from_main(lambda: None)
        return
    with tracking.mlflow_run(experiment, run_name, run_id) as started:
        yield distributed.from_main(lambda: started)


@dataclass(frozen=True)
class _Shipped:
    record: pretrained.Record
    weights: dict[str, torch.Tensor]


def _shipped(
    config: RunConfig,
    scenario: Scenario,
    bench: Benchmark,
    strategy: Strategy,
    main: bool,
    resume: checkpoints.RunCheckpoint | None,
) -> _Shipped | None:
    """The shipped first-task model this run starts from, if one matches, said in one line either way; its weights
    checked against today's model before anything is written.

    Strategies that train experience 0 their own way (`experience0_identity`) and offline ones do not start
    from it. One whose plugins must see training (the `training` kind) starts from the shipped weights and trains
    experience 0's epochs on top, so its state is built from training as its contract says.
    """
    if strategy.offline() or strategy.experience0_identity():
        return None
    if resume is not None:  # a resumed run starts from what it started from, whatever is installed now
        started = resume.meta.get("pretrained") or pretrained.NONE
        config = replace(config, train=replace(config.train, pretrained=started))
    record = pretrained.find(config, scenario, bench)
    if record is None:
        if main and resume is None and config.train.epochs_of(0) > 0:
            print(_training_experience0(config, bench), file=sys.stderr)
        return None
    with torch.random.fork_rng(devices=[]):  # a model of the right shapes, drawn without touching the run's RNG
        shapes = FiLM(bench.first_vocab_size, len(bench.answers), config.model)
    weights = pretrained.load_weights(record, shapes)
    if main:
        then = "" if takes_cache(strategy) else f", then trains its {config.train.epochs_of(0)} epochs on it"
        print(f"experience 0: the shipped model {record.describe()}{then}", file=sys.stderr)
    return _Shipped(record, weights)


def _shipped_state(model: FiLM, weights: dict[str, torch.Tensor], config: RunConfig) -> checkpoints.TrainingState:
    """Experience 0's end as a shipped model gives it: its weights, a fresh optimiser, the run's seeded RNG."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0), weight_decay=config.train.weight_decay)
    return checkpoints.TrainingState(weights, optimizer.state_dict(), checkpoints.rng_state())


def _shipped_params(record: pretrained.Record | None) -> dict[str, Any]:
    if record is None:
        return {"experience0.pretrained": "none"}
    return {
        "experience0.pretrained": record.name,
        "experience0.pretrained.accuracy": record.accuracy,
        "experience0.seeds": "one shipped model for every seed: --seed varies the later experiences only",
    }


def _training_experience0(config: RunConfig, bench: Benchmark) -> str:
    samples = config.train.epochs_of(0) * len(bench.train_datasets[0])
    rates = [
        r.data["provenance"]["samples"] / max(r.data["provenance"]["wall_hours"] * 3600, 1)
        for r in pretrained.records()
        if r.data["applies_to"]["model"] == checkpoints.model_identity(config)
    ]
    how_long = f" ≈ {samples / rates[0] / 60:.0f} min at the shipped model's pretraining speed" if rates else ""
    return (
        f"experience 0: no shipped model matches this run's scenario, data and model; it trains here: "
        f"{config.train.epochs_of(0)} epochs × {len(bench.train_datasets[0]):,} questions = {samples:,} samples"
        f"{how_long} (the progress bar shows its ETA; `python -m clbench pretrain` trains one to ship)"
    )


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


def _what_to_resume(
    config: RunConfig,
    strategy: Strategy,
    scenario: Scenario,
    strategy_spec: str | None,
    scenario_spec: str | None,
    inputs: str,
) -> dict[str, Any]:
    """What `--resume` rebuilds the run from: its config, and how to find and build its strategy and scenario."""
    return {
        "config": config.to_dict(),
        "inputs": inputs,
        "strategy": {"spec": strategy_spec or strategy.name, "params": strategy.params()},
        "scenario": {"spec": scenario_spec or scenario.name, "params": scenario.params()},
    }


def _place_features(config: RunConfig, bench: Benchmark, device: torch.device, progress: bool) -> None:
    """Hold the feature cache on the training device (`data.feature_bank`) where it is asked for or fits."""
    if bench.inputs != "features" or config.data.feature_bank == "host":
        return
    caches = bench.feature_caches()
    if config.data.feature_bank == "auto":
        if device.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(device)
        if FeatureBank.nbytes(caches) > free / 2:
            print(
                f"features stay in host memory: {FeatureBank.nbytes(caches) / 2**30:.1f} GiB is over half the GPU's "
                f"free {free / 2**30:.1f} GiB (data.feature_bank=device puts them there anyway)",
                file=sys.stderr,
            )
            return
    bench.place_features(FeatureBank(caches, device, progress))


def _inputs_of(resume: checkpoints.RunCheckpoint | None) -> str | None:
    return None if resume is None else resume.meta.get("inputs")


def _describe_inputs(config: RunConfig, bench: Benchmark) -> str:
    """Where the visual input comes from, said once: reading features or pixels changes a run's speed tenfold."""
    if bench.inputs == "features":
        where = "" if bench.bank is None else f", held on {bench.bank.tensor.device.type}"  # type: ignore[attr-defined]
        return f"inputs: ResNet-101 features from the feature cache ({config.model.stem_weights} weights{where})"
    return (
        "inputs: pixels through ResNet-101 on every batch (extract the features once to skip it: "
        f"python -m clbench data features{' ' + config.data.root if config.data.root else ''} "
        f"--size {config.model.image_height}x{config.model.image_width}"
        + (" --weights random" if config.model.stem_weights == "random" else "")
        + ")"
    )


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


def _log_params(
    run_id: str,
    config: RunConfig,
    strategy: Strategy,
    scenario: Scenario,
    bench: Benchmark,
    model: FiLM,
    device: torch.device,
    key: str,
    cached: bool,
) -> None:
    """Everything a run is compared or filtered on in the MLflow UI."""
    params = tracking.flatten(config.to_dict()) | {"strategy": strategy.name, "scenario": scenario.name}
    params |= {f"strategy.{k}": v for k, v in strategy.params().items()}
    params |= {f"{SCENARIO_PREFIX}{k}": v for k, v in scenario.params().items()}
    params |= {"scenario.experiences": ",".join(bench.experience_names), "scenario.tests": ",".join(bench.test_names)}
    params |= {"data.fingerprint": bench.fingerprint, "data.inputs": bench.inputs, "device.resolved": str(device)}
    if bench.inputs == "features":
        params["data.feature_bank.resolved"] = "host" if bench.bank is None else str(device)
    params |= {f"data.size.{k}": v for k, v in bench.sizes.items()}
    params |= {"model.parameters": count_parameters(model)} | tracking.versions()
    params |= {"experience0.key": key, "experience0.cached": cached}
    params |= {"strategy.state": strategy.state or "unsaid", "strategy.shortcut": shortcut(strategy)}
    tracking.log_params(run_id, params)


def _loader_args(config: RunConfig, device: torch.device) -> dict[str, Any]:
    workers = config.train.workers_on(device)
    return {"num_workers": workers, "persistent_workers": workers > 0}


def _template(
    config: RunConfig,
    model: FiLM,
    bench: Benchmark,
    strategy: Strategy,
    checkpointer: checkpoints.Checkpointer,
    watcher: continual.ContinualEvaluation | None,
    logger: Any,
    metrics: list[Any],
    device: torch.device,
    progress: bool,
) -> FiLMTemplate:
    """The Avalanche template: the FiLM model, Adam, the strategy's plugins and our evaluator (`metrics` join
    Avalanche's there)."""
    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True, experience=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        QuestionTypeAccuracy(bench.type_names),
        *metrics,
        loggers=[logger] if distributed.is_main() else [],
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0), weight_decay=config.train.weight_decay)
    own = strategy.plugins(model)
    return template_class(strategy.template)(
        model=model,
        optimizer=optimizer,
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=distributed.per_rank_batch(config.train.batch_size),
        train_epochs=config.train.epochs_of(0),
        eval_mb_size=config.train.eval_batch_size,
        device=device,
        plugins=[
            checkpointer,  # first: it must see an experience's end before any strategy hook changes state
            *own,
            *([watcher] if watcher is not None else []),  # after the strategy's: the model once their hooks ran
            *([distributed.AgreementCheck(own)] if distributed.active() else []),
            *([ProgressBar(bench.experience_names)] if progress else []),
        ],
        evaluator=evaluator,
        eval_every=-1,
        amp=amp_dtype(config.train.amp, device),
        **strategy.template_args(),
    )


def _continual_evaluation(
    config: RunConfig, bench: Benchmark, strategy: Strategy, checkpoint: checkpoints.RunCheckpoint, logger: Any
) -> continual.ContinualEvaluation | None:
    """The plugin that watches old test sets while later experiences train (none for offline strategies)."""
    if config.eval.every <= 0 or strategy.offline():
        return None
    return continual.ContinualEvaluation(
        tests=[(name, test.dataset) for name, test in zip(bench.test_names, bench.test_stream, strict=True)],
        experience_names=bench.experience_names,
        every=config.eval.every,
        subset=config.eval.subset,
        batch_size=config.train.eval_batch_size,
        seed=config.seed,
        curves=checkpoint.curves,
        logger=logger,
    )


def _train(
    template: FiLMTemplate,
    checkpointer: checkpoints.Checkpointer,
    watcher: continual.ContinualEvaluation | None,
    checkpoint: checkpoints.RunCheckpoint,
    config: RunConfig,
    i: int,
    experience: Any,
    name: str,
    resumed: bool,
) -> None:
    """Experience i: trained in full, continued from a mid-experience checkpoint, or replayed from its end.

    A strategy of the `training` kind is never replayed: its resumed checkpoint was `restarted()`.
    """
    template.train_epochs = config.train.epochs_of(i)
    for group in template.optimizer.param_groups:
        group["lr"] = config.train.lr_of(i)
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
    template.train(experience, **_loader_args(config, template.device))


def _evaluate(
    template: FiLMTemplate,
    bench: Benchmark,
    film_stats: FiLMStatistics,
    predictions: Predictions,
    after: str,
    loader_args: dict[str, Any],
) -> _Measured:
    """The whole test stream: accuracy per test set, per question type where a set holds several, and FiLM.

    Evaluation leaves the random state as it found it (its loaders draw seeds from it): training goes on the
    same whether or not, and how often, it evaluates, which is also what keeps the ranks of a torchrun job,
    where rank 0 alone evaluates, drawing the same shuffles.
    """
    rng = checkpoints.rng_state()
    metrics = template.eval(bench.test_stream, **loader_args)
    checkpoints.set_rng_state(rng)
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
    return _Measured(accuracy, film_stats.result(), per_type, predictions.result())


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


def _result(
    run_id: str,
    bench: Benchmark,
    rows: tuple[str, ...],
    measured: list[_Measured],
    wall_time_s: float,
    experience0_trained: bool,
    spent: dict[str, float],
) -> RunResult:
    names, tests = list(rows), list(bench.test_names)
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
        experience0_trained=experience0_trained,
        cost=spent,
        **_film_tables([m.film for m in measured], names, tests),
    )


def _film_tables(
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


def _position(checkpoint: checkpoints.RunCheckpoint, names: tuple[str, ...]) -> str:
    name = names[min(checkpoint.experience, len(names) - 1)]
    return f"experience {checkpoint.experience} ({name}), after {checkpoint.epochs_done} finished epoch(s)"


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
    metrics[metric_names.WALL_TIME] = result.wall_time_s
    metrics |= result.cost
    return {name: float(value) for name, value in metrics.items()}


def _measure_metrics(result: RunResult) -> dict[str, float]:
    """The measures of clbench.measures: per test set and their mean (NaN means are left out)."""
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


def _log_result(
    run_id: str, result: RunResult, config: RunConfig, strategy: Strategy, scenario: Scenario, model: FiLM, logger: Any
) -> None:
    """Final figures as metrics, and the accuracy matrix, config and checkpoint as artifacts."""
    from mlflow import MlflowClient

    step = len(result.accuracy) - 1
    for name, value in summary_metrics(result).items():
        logger.log_single_metric(name, value, step)
    logger.flush()
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result.accuracy.to_csv(folder / "accuracy_matrix.csv")
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
