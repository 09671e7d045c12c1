"""Pretraining: a scenario's first experience trained once, for as long as it takes, and resumable to the bit.

FiLM needs millions of samples before its question grounds in the image; no run can afford that on every start,
so the first experience is trained here once (hours on a CPU, minutes on a GPU) and shipped
(`clbench.model.pretrained`). The loop is plain PyTorch rather than an Avalanche template: it is one supervised task,
and what it needs none of Avalanche's loops gives: a learning rate scheduled by samples seen, checkpoints in the
middle of an epoch that resume exactly (same weights as an uninterrupted run), and evaluation by sample count.
The model, data and vocabulary are the run's own (`runner.build_benchmark`, `runner.build_model`), so what
comes out loads into any run of the scenario.

The state on disk (`<folder>/checkpoint.pt`) is written atomically at every evaluation, every
`checkpoint_seconds`, and on SIGINT/SIGTERM; a killed pretraining loses at most that much and continues with
the same command.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clbench.core.errors import ConfigError
from clbench.data.inputs import FiLMInput
from clbench.training.checkpoints import scenario_identity
from clbench.training.pretraining import (
    CURVE_CSV,
    CURVE_PNG,
    Batches,
    Point,
    PretrainSpec,
    Progress,
    Stop,
    check_continuable,
    checkpoint_path,
    describe_eta,
    draw_curve,
    eta_to_target,
    evaluate,
    load,
    reached,
    save,
    stderr_line,
    write_curve_csv,
)


@dataclass
class Outcome:
    """What a sitting of `pretrain` ended with."""

    folder: Path
    progress: Progress
    stopped: str  # "target", "budget", or the signal that asked it to stop

    @property
    def last(self) -> Point | None:
        return self.progress.curve[-1] if self.progress.curve else None


def pretrain(
    spec: PretrainSpec,
    scenario,
    folder: Path,
    *,
    tracking_uri: str | None = None,
    experiment: str = "pretrain",
    checkpoint_seconds: float = 300.0,
    progress_bar: bool = True,
    stop_after: int | None = None,
) -> Outcome:
    """Train the scenario's first experience from `folder`'s checkpoint (or from scratch) until the target or the
    budget; evaluate every `spec.eval_every` samples; log the curve to MLflow and draw it beside the checkpoint.

    `stop_after` ends this sitting (saved, not finished) after that many samples in all: what a test or a
    machine with a deadline uses; a later call continues.
    """
    from clbench.report import tracking

    blob = load(folder)
    if blob is not None:
        check_continuable(blob, spec, folder)
    progress = Progress.from_blob(blob["progress"]) if blob is not None else Progress()
    if progress.budgets:  # (checkpoints saved before budgets were kept have none)
        _check_decay(progress.budgets[-1][1], spec, progress, folder)
    if progress.finished == "budget" and spec.budget > progress.samples:  # shipped at a budget, then given more
        stderr_line(
            f"pretrain: {folder} stopped at its budget of {progress.samples:,} samples; going on to {spec.budget:,}"
        )
        progress.finished = None
    if not progress.budgets or progress.budgets[-1][1] != spec.budget:
        progress.budgets.append([progress.samples, spec.budget])
    if progress.finished:
        stderr_line(f"{folder} finished already ({progress.finished}); nothing to do")
        return Outcome(folder, progress, progress.finished)
    sitting = _Sitting.build(spec, scenario, folder, progress, blob, progress_bar)
    sitting.save_every = checkpoint_seconds
    uri = tracking.tracking_uri(tracking_uri)
    tracking.configure(uri)
    tracking.prepare_store(uri)
    name = f"pretrain · {spec.scenario.get('name', '?')} · {spec.config.preset}"
    stop = Stop()
    with tracking.mlflow_run(experiment, name, progress.run_id) as run_id, stop.handling():
        if progress.run_id is None:
            progress.run_id = run_id
            _log_params(run_id, spec, sitting.bench, folder)
        stopped = sitting.run(stop, stop_after, _bar(spec, progress, progress_bar))
    stderr_line(f"pretrain: {_last_words(progress)} — stopped: {stopped}; state in {checkpoint_path(folder)}")
    return Outcome(folder, progress, stopped)


def _check_decay(total: int, spec: PretrainSpec, progress: Progress, folder: Path) -> None:
    """Past its warm-up, the learning rate decays toward the budget, so a sitting under another budget would
    follow another schedule than the sittings before it: weights no single command makes. The one exception is a
    pretraining that spent its budget going on under a larger one (its record lists both budgets)."""
    if progress.samples <= spec.schedule.warmup or total == spec.schedule.total or spec.schedule.shape == "constant":
        return
    if progress.finished == "budget" and spec.budget > progress.samples:
        return
    raise ConfigError(
        f"{folder} decays its learning rate toward --budget {total}, not {spec.budget}",
        f"continue it with --budget {total}; to stop it earlier (and ship it there), add --stop-after N",
    )


@dataclass
class _Sitting:
    """One sitting of a pretraining: the model and data in memory, stepping, evaluating and saving."""

    spec: PretrainSpec
    folder: Path
    bench: Any
    train: Batches
    val: Batches
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    progress: Progress
    save_every: float = 300.0
    losses: list[float] = field(default_factory=list)

    @classmethod
    def build(cls, spec, scenario, folder: Path, progress: Progress, blob, progress_bar: bool) -> _Sitting:
        """The run's benchmark and model (so the weights fit the run), restored from `blob` where there is one."""
        from clbench.run.build import build_benchmark, build_model, resolve_device
        from clbench.training.checkpoints import set_rng_state

        config = spec.config
        device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        bench = build_benchmark(config, scenario, progress_bar)
        train = Batches(_training_split(spec, scenario, bench, progress_bar), config.seed, config.train.batch_size)
        progress.train_questions = len(train)
        val = _validation(bench, spec, config.train.eval_batch_size)
        torch.manual_seed(config.seed)
        model = build_model(config, bench, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=spec.schedule.peak, weight_decay=config.train.weight_decay)
        if blob is not None:
            model.load_state_dict(blob["model"])
            optimizer.load_state_dict(blob["optimizer"])
            set_rng_state(blob["rng"])
            stderr_line(f"pretrain: continuing {folder} at {progress.samples:,} samples ({_last_words(progress)})")
        model.train()
        return cls(spec, folder, bench, train, val, model, optimizer, device, progress)

    def run(self, stop: Stop, stop_after: int | None, bar) -> str:
        """Batches until the target, the budget, a signal or `stop_after`; saved at every evaluation, every
        `save_every` seconds and when it stops."""
        progress, last_save = self.progress, time.monotonic()
        try:
            if progress.samples >= min(self.spec.budget, stop_after or self.spec.budget):  # not one step more
                if not progress.curve or progress.curve[-1].samples != progress.samples:
                    self.evaluate(self.spec.schedule.lr(progress.samples), bar)  # sets `finished`
                if progress.samples >= self.spec.budget:
                    progress.finished = progress.finished or "budget"
                save(self.folder, self.spec, progress, self.model, self.optimizer)
                return progress.finished or "stop_after"
            while True:
                for inputs, answers in self.train.epoch(progress.epoch, progress.batch):
                    evaluated = self.step(inputs, answers, bar)
                    stopped = progress.finished or stop.asked
                    if stopped is None and stop_after is not None and progress.samples >= stop_after:
                        stopped = "stop_after"
                    if stopped or evaluated or time.monotonic() - last_save >= self.save_every:
                        save(self.folder, self.spec, progress, self.model, self.optimizer)
                        last_save = time.monotonic()
                    if stopped:
                        return stopped
                progress.epoch, progress.batch = progress.epoch + 1, 0
        finally:
            bar.close()

    def step(self, inputs: FiLMInput, answers: Tensor, bar) -> bool:
        """One optimiser step at the scheduled learning rate, and an evaluation when it crosses `eval_every` or ends
        the budget (True then). Wall time counts training and evaluation, not saving; a point holds the time
        its evaluation began."""
        began, progress, spec = time.monotonic(), self.progress, self.spec
        lr = spec.schedule.lr(progress.samples)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = torch.nn.functional.cross_entropy(self.model(inputs.to(self.device)), answers.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(float(loss.detach()))
        before = progress.samples
        progress.samples += len(answers)
        progress.batch += 1
        bar.update(len(answers))
        progress.seconds += time.monotonic() - began
        due = progress.samples // spec.eval_every > before // spec.eval_every or progress.samples >= spec.budget
        if due:
            self.evaluate(lr, bar)
        return due

    def evaluate(self, lr: float, bar) -> None:
        """A point on the curve where the model stands, recorded; finished when it reaches the target or budget."""
        began, progress, spec = time.monotonic(), self.progress, self.spec
        point = _evaluate_point(self.model, self.val, self.bench, self.device, lr, self.losses, progress)
        self.losses = []
        _record(progress.run_id, point, progress, spec, self.folder)
        bar.set_postfix_str(_postfix(point, spec, progress), refresh=True)
        bar.write(f"pretrain: {_point_line(point)}", file=sys.stderr)
        if reached(point, spec):
            progress.finished = "target"
        elif progress.samples >= spec.budget:
            progress.finished = "budget"
        progress.seconds += time.monotonic() - began


def _training_split(spec: PretrainSpec, scenario, bench, progress_bar: bool):
    """The first experience's questions: the run's own, or those of `spec.train_world`, encoded with the same
    vocabulary (checked: the weights must read the run's tokens)."""
    if spec.train_world is None:
        return bench.train_datasets[0]
    from dataclasses import replace

    from clbench.run.build import build_benchmark

    if spec.config.data.root is not None:
        raise ConfigError("--train-world enlarges the generated world", "leave out --data, or --train-world")
    config = replace(spec.config, data=replace(spec.config.data, synth_preset=spec.train_world))
    larger = build_benchmark(config, scenario, progress_bar)
    first = bench.first_vocab_size
    if larger.vocab.idx_to_token[:first] != bench.vocab.idx_to_token[:first] or larger.first_vocab_size != first:
        raise ConfigError(
            f"the {spec.train_world} world's first experience has another vocabulary than the run's",
            "pretrain on a world of the same generator settings (only the number of training images may differ)",
        )
    return larger.train_datasets[0]


def _validation(bench, spec: PretrainSpec, batch_size: int) -> Batches:
    val = Batches(bench.test_datasets[0], 0, batch_size)
    if spec.eval_questions is not None and spec.eval_questions < len(val):
        keep = torch.randperm(len(val), generator=torch.Generator().manual_seed(12345))[: spec.eval_questions]
        keep = keep.sort().values
        val.rows, val.questions, val.lengths = val.rows[keep], val.questions[keep], val.lengths[keep]
        val.types, val.answers = val.types[keep], val.answers[keep]
    return val


def _evaluate_point(model, val: Batches, bench, device, lr: float, losses: list[float], progress: Progress) -> Point:
    accuracy, per_type = evaluate(model, val, bench.type_names, device)
    loss = float(np.mean(losses)) if losses else float("nan")
    point = Point(progress.samples, round(progress.seconds, 1), lr, loss, accuracy, per_type)
    progress.curve.append(point)
    return point


def _record(run_id: str, point: Point, progress: Progress, spec: PretrainSpec, folder: Path) -> None:
    """The point in MLflow (step: samples seen), the curve's PNG and CSV beside the checkpoint and as artifacts."""
    import mlflow

    metrics = {"val_accuracy_frac": point.accuracy, "train_loss": point.loss, "lr": point.lr}
    metrics |= {"wall_time_h": point.seconds / 3600}
    metrics |= {f"val_accuracy_frac/{name}": value for name, value in point.per_type.items()}
    client = mlflow.MlflowClient()
    timestamp = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[mlflow.entities.Metric(k, float(v), timestamp, point.samples) for k, v in metrics.items()],
    )
    title = f"pretraining {spec.scenario.get('name', '')} ({spec.config.preset}): {point.samples / 1e6:.2f}M samples"
    draw_curve(progress.curve, folder / CURVE_PNG, target=spec.target, title=title)
    write_curve_csv(progress.curve, folder / CURVE_CSV)
    if len(progress.curve) % 10 == 1 or point.samples >= spec.budget or reached(point, spec):
        client.log_artifact(run_id, str(folder / CURVE_PNG))
        client.log_artifact(run_id, str(folder / CURVE_CSV))


def _log_params(run_id: str, spec: PretrainSpec, bench, folder: Path) -> None:
    import mlflow

    from clbench.report.tracking import flatten

    params = flatten({"config": spec.config.to_dict(), "schedule": asdict(spec.schedule)})
    params |= {
        "scenario": json.dumps(spec.scenario, sort_keys=True),
        "budget": spec.budget,
        "target": spec.target,
        "type_target": spec.type_target,
        "data.fingerprint": bench.fingerprint,
        "folder": str(folder),
        "train_questions": len(bench.train_datasets[0]),
    }
    mlflow.MlflowClient().log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()])


def _bar(spec: PretrainSpec, progress: Progress, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=spec.budget,
        initial=progress.samples,
        unit="q",
        unit_scale=True,
        desc="pretrain",
        disable=not enabled or None,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.05,
    )


def _postfix(point: Point, spec: PretrainSpec, progress: Progress) -> str:
    rate = point.samples / max(point.seconds, 1e-9)
    weakest = min(point.per_type.items(), key=lambda kv: kv[1]) if point.per_type else ("-", float("nan"))
    eta = eta_to_target(progress.curve, spec.target, rate) if 0 < spec.target <= 1 else None
    return (
        f"val {100 * point.accuracy:.1f} % (weakest {weakest[0]} {100 * weakest[1]:.0f} %) · loss {point.loss:.3f}"
        f" · lr {point.lr:.1e} · to {100 * spec.target:.0f} %: ≈ {describe_eta(eta)}"
    )


def _point_line(point: Point) -> str:
    """One evaluation as a log line: what a pretraining in the background leaves to read."""
    types = ", ".join(f"{name} {100 * value:.1f}" for name, value in point.per_type.items())
    rate = point.samples / max(point.seconds, 1e-9)
    return (
        f"{point.samples / 1e6:.2f}M samples, {point.seconds / 3600:.2f} h ({rate:.0f} q/s): val "
        f"{100 * point.accuracy:.1f} % ({types}), {_loss(point)}lr {point.lr:.2e}"
    )


def _loss(point: Point) -> str:
    """The training loss since the previous point; none where no batch was trained in between."""
    return "" if math.isnan(point.loss) else f"loss {point.loss:.3f}, "


def _last_words(progress: Progress) -> str:
    last = progress.curve[-1] if progress.curve else None
    where = f"{progress.samples / 1e6:.2f}M samples, {progress.seconds / 3600:.2f} h"
    return f"{where}, val {100 * last.accuracy:.1f} %" if last else where


def ship(
    name: str,
    spec: PretrainSpec,
    scenario,
    folder: Path,
    *,
    command: str,
    to: Path | None = None,
    stopped: str | None = None,
) -> Path:
    """Install a pretraining's weights as shipped model `name` (`clbench.model.pretrained`), once it finished or
    where `--stop-after` ended it (`stopped`): the command then still holds the budget its schedule decays to, so
    it remakes these weights from scratch. The weights as shipped (float16 where float32 would pass 5 MB) are
    evaluated on the run's own validation set, and that is the accuracy the record states and a test reproduces."""
    from clbench.model import pretrained
    from clbench.run.build import build_benchmark, build_model

    blob = load(folder)
    if blob is not None:
        stopped = blob["progress"].get("finished") or stopped
    if blob is None or not stopped:
        raise ConfigError(
            f"{folder} holds no finished pretraining",
            "let `pretrain` reach its target or budget first, or end it where it stands with --stop-after N",
        )
    check_continuable(blob, spec, folder)
    progress = Progress.from_blob(blob["progress"])
    config = spec.config
    bench = build_benchmark(config, scenario, False)
    model = build_model(config, bench, torch.device("cpu"))
    state, dtype = pretrained.compact(blob["model"])
    model.load_state_dict({k: v.to(blob["model"][k].dtype) for k, v in state.items()})
    val = Batches(bench.test_datasets[0], 0, config.train.eval_batch_size)
    accuracy, per_type = evaluate(model, val, bench.type_names, torch.device("cpu"))
    provenance = {
        "command": command,
        "data_fingerprint": bench.fingerprint,
        "train_world": spec.train_world or config.data.synth_preset,
        "train_questions": progress.train_questions or len(_training_split(spec, scenario, bench, False)),
        "samples": progress.samples,
        "wall_hours": round(progress.seconds / 3600, 3),
        "machine": pretrained.machine(),
        "schedule": asdict(spec.schedule),
        "batch_size": config.train.batch_size,
        "seed": config.seed,
        "stopped": stopped,
    }
    if len(progress.budgets) > 1:  # went on past a spent budget: [samples, budget] from each change on
        provenance["budgets"] = progress.budgets
    return pretrained.write(
        name,
        to or pretrained.FOLDER,
        state=state,
        applies_to=pretrained.identity(config, scenario_identity(scenario), bench),
        provenance=provenance,
        validation={"accuracy": accuracy, "per_type": per_type, "questions": len(val)},
        curve_png=folder / CURVE_PNG,
        dtype=dtype,
    )
