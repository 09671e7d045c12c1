"""One run: benchmark + FiLM + strategy plugins + evaluator, trained experience by experience, tracked in MLflow."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
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

from clbench import checkpoints, metric_names, plots, tracking
from clbench.config import RunConfig
from clbench.errors import ConfigError
from clbench.film import FiLM, count_parameters
from clbench.metrics import FiLMSnapshot, FiLMStatistics, QuestionTypeAccuracy, film_drift, type_metric_name
from clbench.scenarios import clevr_humans
from clbench.strategy import Strategy
from clbench.training import FiLMTemplate, ProgressBar, amp_dtype

TEST_STREAM = "test_stream"


def accuracy_key(experience: int) -> str:
    return f"Top1_Acc_Exp/eval_phase/{TEST_STREAM}/Exp{experience:03d}"


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

    @property
    def forgetting(self) -> dict[str, float]:
        """Best earlier accuracy minus final accuracy, for every experience but the last."""
        last = len(self.accuracy) - 1
        return {
            col: float(self.accuracy[col].iloc[:last].max() - self.accuracy[col].iloc[last])
            for col in self.accuracy.columns[:last]
        }

    @property
    def bwt(self) -> float:
        last = len(self.accuracy) - 1
        diffs = [self.accuracy.iloc[last, j] - self.accuracy.iloc[j, j] for j in range(last)]
        return float(sum(diffs) / len(diffs)) if diffs else 0.0

    def summary(self) -> str:
        pct = self.accuracy.map(lambda v: f"{100 * v:5.1f}")
        lines = ["Accuracy matrix (%) — rows: after training on, columns: tested on", pct.to_string(), ""]
        base = ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.majority_baseline.items())
        lines.append(f"Majority-answer baseline: {base}")
        forget = ", ".join(f"{k} {100 * v:+.1f} pts" for k, v in self.forgetting.items())
        lines.append(f"Forgetting: {forget}    BWT: {100 * self.bwt:+.1f} pts")
        if not self.per_type.empty:
            lines += [
                "",
                "Per question type (%):",
                self.per_type.map(lambda v: f"{100 * v:5.1f}").to_string(),
            ]
        if not self.film.empty:
            columns = ["gamma_negative_share", "gamma_near_zero_share", "gamma_mean", "gamma_std", "beta_std"]
            overall = self.film.xs("all", level="block")[columns]
            lines += ["", "FiLM (gamma, beta) over all blocks:", overall.round(3).to_string()]
        if not self.film_drift.empty:
            lines += ["", "FiLM drift from first to last experience:", self.film_drift.round(3).to_string()]
        lines.append(f"\nWall time: {self.wall_time_s:.1f} s    MLflow run: {self.run_id}")
        return "\n".join(lines)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available", "use --device auto or cpu")
    return torch.device(requested)


def resolve_data_root(config: RunConfig, progress: bool = True) -> Path:
    if config.data.root is not None:
        return Path(config.data.root)
    from clbench.synth import ensure_default_data

    return ensure_default_data(config.data.synth_preset, config.data.synth_seed, progress=progress)


def build_scenario(config: RunConfig, progress: bool = True) -> clevr_humans.ClevrHumansScenario:
    return clevr_humans.build(
        resolve_data_root(config, progress),
        image_size=(config.model.image_height, config.model.image_width),
        fraction=config.data.fraction,
        seed=config.seed,
        min_word_count=config.data.min_word_count,
        max_train_questions=config.data.max_train_questions,
        max_test_questions=config.data.max_test_questions,
        scene_maps=config.model.stem == "scene",
        progress=progress,
    )


def build_model(config: RunConfig, scenario: clevr_humans.ClevrHumansScenario, device: torch.device) -> FiLM:
    model = FiLM(scenario.clevr_vocab_size, len(scenario.answers), config.model)
    if config.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if config.train.compile:
        model.compile(dynamic=True)  # in place: parameter names, state dicts and checkpoints stay the same
    return model


def run(
    config: RunConfig,
    strategy: Strategy,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    out=None,
    run_id: str | None = None,
    resume: checkpoints.RunCheckpoint | None = None,
    strategy_spec: str | None = None,
) -> RunResult:
    """Train experience by experience, evaluating the whole test stream after each; log all to MLflow.

    `run_id` continues a run created beforehand (a sweep creates its cells' runs, tagged with their parent);
    `resume` continues an interrupted run from its checkpoint, in the same MLflow run.
    """
    out = out or sys.stdout
    started = time.perf_counter()
    device = resolve_device(config.device)
    uri = tracking.tracking_uri(tracking_uri)
    tracking.configure(uri)
    experiment = experiment or clevr_humans.NAME
    RNGManager.set_random_seeds(config.seed)
    config.train.check_experiences(clevr_humans.EXPERIENCES)  # before any data is generated or read
    scenario = build_scenario(config, progress)
    tracking.prepare_store(uri)  # after the data is known good: bad input leaves no store behind
    tracking.end_orphaned_runs(experiment)
    RNGManager.set_random_seeds(config.seed)
    model = build_model(config, scenario, device)
    run_id = resume.run_id if resume is not None else run_id

    with (
        tracking.mlflow_run(experiment, run_name or strategy.name, run_id) as run_id,
        ExitStack() as experience0_lock,
    ):
        logger = tracking.MLflowLogger(run_id)
        film_stats = FiLMStatistics()
        evaluator = EvaluationPlugin(
            accuracy_metrics(epoch=True, experience=True, stream=True),
            loss_metrics(epoch=True, experience=True),
            forgetting_metrics(experience=True, stream=True),
            bwt_metrics(experience=True, stream=True),
            QuestionTypeAccuracy(scenario.type_names),
            film_stats,
            loggers=[logger],
        )
        key = checkpoints.experience0_key(config, scenario.fingerprint)
        reuse = config.train.reuse_experience0
        if resume is None:
            if reuse:
                # Runs sharing experience 0 (a sweep's cells) wait here while one of them trains it.
                experience0_lock.enter_context(checkpoints.locked(key))
            cached = checkpoints.load(key) if reuse else None
            meta = {
                "experiment": experiment,
                "run_name": run_name or strategy.name,
                "tracking_uri": uri,
                "config": config.to_dict(),
                "strategy": {"spec": strategy_spec or strategy.name, "params": strategy.params()},
            }
            checkpoint = checkpoints.RunCheckpoint(run_id, meta, boundaries=[cached] if cached is not None else [])
            params = tracking.flatten(config.to_dict()) | {"strategy": strategy.name}
            params |= {f"strategy.{k}": v for k, v in strategy.params().items()}
            params |= {"data.fingerprint": scenario.fingerprint, "device.resolved": str(device)}
            params |= {f"data.size.{k}": v for k, v in scenario.sizes.items()}
            params |= {"model.parameters": count_parameters(model)} | tracking.versions()
            params |= {"experience0.key": key, "experience0.cached": cached is not None}
            tracking.log_params(run_id, params)
        else:
            checkpoint = resume
            print(f"resuming run {run_id} at {_position(resume, scenario)}", file=sys.stderr)
        experience0_trained = not checkpoint.boundaries and config.train.epochs_of(0) > 0
        checkpointer = checkpoints.Checkpointer(checkpoint, key if reuse else None)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.train.lr_of(0), weight_decay=config.train.weight_decay
        )
        template = FiLMTemplate(
            model=model,
            optimizer=optimizer,
            criterion=torch.nn.CrossEntropyLoss(),
            train_mb_size=config.train.batch_size,
            train_epochs=config.train.epochs_of(0),
            eval_mb_size=config.train.eval_batch_size,
            device=device,
            plugins=[
                checkpointer,  # first: it must see an experience's end before any strategy hook changes state
                *strategy.plugins(model),
                *([ProgressBar(scenario.experience_names)] if progress else []),
            ],
            evaluator=evaluator,
            eval_every=-1,
            amp=amp_dtype(config.train.amp, device),
        )
        loader_args = {
            "num_workers": config.train.num_workers,
            "persistent_workers": config.train.num_workers > 0,
        }
        finished = list(checkpoint.boundaries)
        rows: list[list[float]] = []
        snapshots: list[dict[int, FiLMSnapshot]] = []
        type_rows: dict[tuple[str, str], dict[str, float]] = {}
        try:
            for i, experience in enumerate(scenario.train_stream):
                template.train_epochs = config.train.epochs_of(i)
                for group in template.optimizer.param_groups:
                    group["lr"] = config.train.lr_of(i)
                if i < len(finished):  # trained before (cache or checkpoint): only its end-of-experience hooks
                    what = "replaying its end" if resume is not None else "reusing the cached model"
                    print(f"experience {i} ({scenario.experience_names[i]}): {what}", file=sys.stderr)
                    checkpointer.restore_at_start(finished[i])
                    template.train_epochs = 0
                elif checkpoint.current is not None and checkpoint.experience == i:
                    checkpointer.restore_at_start(checkpoint.current, checkpoint.epochs_done)
                    template.train_epochs -= checkpoint.epochs_done
                template.train(experience, **loader_args)
                experience0_lock.close()
                metrics = template.eval(scenario.test_stream, **loader_args)
                checkpointer.experience_done(i)
                rows.append([metrics[accuracy_key(j)] for j in range(len(scenario.test_stream))])
                snapshots.append(film_stats.result())
                for j, test_name in enumerate(scenario.experience_names):
                    row = {
                        name: metrics[metric]
                        for name in scenario.type_names
                        if (metric := type_metric_name(TEST_STREAM, j, name)) in metrics
                    }
                    if len(row) > 1 or clevr_humans.HUMANS_TYPE not in row:
                        type_rows[(scenario.experience_names[i], test_name)] = row
        except BaseException:
            logger.flush()
            if checkpoints.run_path(run_id).is_file():
                print(
                    f"run {run_id} saved at its last finished epoch; continue it with: "
                    f"python -m clbench run --resume {run_id}",
                    file=sys.stderr,
                )
            raise
        names = list(scenario.experience_names)
        accuracy = pd.DataFrame(rows, index=pd.Index(names, name="after"), columns=pd.Index(names, name="test"))
        per_type = pd.DataFrame.from_dict(type_rows, orient="index")
        if not per_type.empty:
            per_type.index = pd.MultiIndex.from_tuples(per_type.index, names=["after", "test"])
        result = RunResult(
            run_id=run_id,
            accuracy=accuracy,
            per_type=per_type,
            majority_baseline={f"{k} (test)": v for k, v in scenario.majority_baseline.items()},
            wall_time_s=time.perf_counter() - started,
            sizes=scenario.sizes,
            experience0_trained=experience0_trained,
            **_film_tables(snapshots, names),
        )
        _log_result(run_id, result, config, strategy, model, logger)
        checkpoints.delete_run(run_id)  # finished: the final model is an MLflow artifact now
    print(result.summary(), file=out)
    return result


def _film_tables(snapshots: list[dict[int, FiLMSnapshot]], names: list[str]) -> dict[str, pd.DataFrame]:
    """Gamma/beta summaries after every experience, and their drift from the first to the last."""
    if not snapshots or not snapshots[0]:
        return {}
    keys = [(names[i], names[j]) for i, per_test in enumerate(snapshots) for j in per_test]
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
        drift = pd.concat([film_drift(first[j], last[j]) for j in common], keys=[names[j] for j in common])
        drift.index = drift.index.set_names(["test", "block"])
    return {"film": film, "film_drift": drift, "film_histograms": histograms.reset_index(drop=True)}


def _position(checkpoint: checkpoints.RunCheckpoint, scenario) -> str:
    name = scenario.experience_names[min(checkpoint.experience, len(scenario.experience_names) - 1)]
    return f"experience {checkpoint.experience} ({name}), after {checkpoint.epochs_done} finished epoch(s)"


def summary_metrics(result: RunResult) -> dict[str, float]:
    """The run's final figures under flat names, one value each: the columns runs are compared on."""
    metrics = {metric_names.forgetting(test): value for test, value in result.forgetting.items()}
    metrics[metric_names.BWT] = result.bwt
    metrics |= {metric_names.final_accuracy(test): value for test, value in result.accuracy.iloc[-1].items()}
    for after, row in result.accuracy.iterrows():
        metrics |= {metric_names.accuracy(after, test): value for test, value in row.items()}
    for (after, test), row in result.per_type.iterrows():
        metrics |= {metric_names.type_accuracy(after, test, kind): v for kind, v in row.items() if pd.notna(v)}
    for (after, test, block), row in result.film.iterrows():
        metrics |= {metric_names.film(after, test, block, stat): value for stat, value in row.items()}
    for (test, block), row in result.film_drift.iterrows():
        metrics |= {metric_names.film_drift(test, block, stat): value for stat, value in row.items()}
    metrics |= {metric_names.majority_baseline(test.split(" ")[0]): v for test, v in result.majority_baseline.items()}
    metrics[metric_names.WALL_TIME] = result.wall_time_s
    return {name: float(value) for name, value in metrics.items()}


def _log_result(
    run_id: str, result: RunResult, config: RunConfig, strategy: Strategy, model: FiLM, logger: Any
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
            figure = plots.gamma_beta(result.film_histograms, hue="after", reference=result.accuracy.index[0])
            plots.save(figure, folder / "gamma_beta.png")
        if not result.film_drift.empty:
            result.film_drift.to_csv(folder / "film_drift.csv")
        resolved = {"config": config.to_dict(), "strategy": {"name": strategy.name, **strategy.params()}}
        (folder / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(resolved)), sort_keys=False))
        (folder / "summary.txt").write_text(result.summary() + "\n")
        torch.save(model.state_dict(), folder / "model.pt")
        client.log_artifacts(run_id, str(folder))
