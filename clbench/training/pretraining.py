"""What a pretraining is made of, apart from its loop (`clbench.run.pretrain`): its spec and learning-rate schedule,
the training questions held as tensors, its state on disk (resumable to the bit) and its learning curve."""

from __future__ import annotations

import json
import math
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clbench.config import RunConfig
from clbench.core.errors import ConfigError
from clbench.core.paths import replace_atomically
from clbench.data.inputs import FiLMInput

CHECKPOINT = "checkpoint.pt"


CURVE_PNG = "curve.png"


CURVE_CSV = "curve.csv"


SHAPES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class Schedule:
    """Learning rate against samples seen: a linear warm-up to `peak`, then constant, cosine or linear decay to
    `floor` × peak at `total` samples. Warm-up is what gets CLEVR models off their early plateau."""

    peak: float
    warmup: int
    total: int
    shape: str = "cosine"
    floor: float = 0.05

    def lr(self, samples: int) -> float:
        if samples < self.warmup:
            return self.peak * (samples + 1) / self.warmup
        if self.shape == "constant":
            return self.peak
        progress = min(1.0, (samples - self.warmup) / max(1, self.total - self.warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if self.shape == "cosine" else 1 - progress
        return self.peak * (self.floor + (1 - self.floor) * decay)


@dataclass(frozen=True)
class PretrainSpec:
    """Everything that decides the pretrained weights: two pretrainings with equal specs give equal weights."""

    config: RunConfig
    scenario: dict[str, Any]  # checkpoints.scenario_identity of the scenario
    schedule: Schedule
    budget: int  # samples: the pretraining stops here at the latest
    target: float  # validation accuracy at which it stops early (0 < target ≤ 1; above 1: never)
    type_target: float = 0.0  # ... provided every question type reaches this
    eval_every: int = 100_000  # samples between evaluations
    eval_questions: int | None = None  # a fixed subset of the validation set while training (None: all of it)
    # a larger generated world whose training split the first experience trains on (the run's own world gives the
    # validation set, the vocabulary and what the weights are shipped for); None: the run's own training split
    train_world: str | None = None

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be continued (the target and budget may change between sittings)."""
        values = asdict(self)
        for name in ("budget", "target", "type_target", "eval_every", "eval_questions"):
            values.pop(name)
        values["schedule"].pop("total")  # a longer budget stretches the decay: allowed while still warming up
        values["config"]["device"] = None
        return experience0_only(json.loads(json.dumps(values, default=str)))


@dataclass
class Point:
    """One evaluation on the learning curve."""

    samples: int
    seconds: float
    lr: float
    loss: float  # mean training loss since the previous point
    accuracy: float
    per_type: dict[str, float]


@dataclass
class Progress:
    """Where a pretraining stands: everything besides the tensors, saved with them."""

    samples: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` done
    seconds: float = 0.0  # training and evaluation wall time, summed over sittings
    curve: list[Point] = field(default_factory=list)
    run_id: str | None = None  # its MLflow run, continued by a resumed pretraining
    finished: str | None = None  # why it stopped: "target", "budget"
    train_questions: int | None = None  # the size of the training split, for the shipped record
    budgets: list[list[int]] = field(default_factory=list)  # [samples, budget] where each budget took over

    def to_blob(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> Progress:
        blob = dict(blob)
        blob["curve"] = [Point(**p) for p in blob["curve"]]
        return cls(**blob)


class Batches:
    """The training questions held as tensors, and a seeded order per epoch: batches are gathered by index, with
    no DataLoader. Epoch e's order depends on (seed, e) alone, so a resumed pretraining meets the same batches."""

    def __init__(self, dataset, seed: int, batch_size: int) -> None:
        self.images = torch.from_numpy(np.array(dataset.images.array)).permute(0, 3, 1, 2)
        self.rows = torch.from_numpy(np.asarray(dataset.rows))
        self.questions = torch.from_numpy(np.asarray(dataset.questions))
        self.lengths = torch.from_numpy(np.asarray(dataset.lengths))
        self.types = torch.from_numpy(np.asarray(dataset.types))
        self.answers = torch.from_numpy(np.asarray(dataset.answers))
        self.seed, self.batch_size = seed, batch_size

    def __len__(self) -> int:
        return len(self.rows)

    def per_epoch(self) -> int:
        return math.ceil(len(self) / self.batch_size)

    def order(self, epoch: int) -> Tensor:
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def batch(self, index: Tensor) -> tuple[FiLMInput, Tensor]:
        inputs = FiLMInput(self.images[self.rows[index]], self.questions[index], self.lengths[index], self.types[index])
        return inputs, self.answers[index]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[FiLMInput, Tensor]]:
        order = self.order(epoch)
        for b in range(start, self.per_epoch()):
            yield self.batch(order[b * self.batch_size : (b + 1) * self.batch_size])


def evaluate(model, batches: Batches, type_names: tuple[str, ...], device: torch.device) -> tuple[float, dict]:
    """Accuracy overall and per question type present, in eval mode, the model's mode restored after."""
    was_training = model.training
    model.eval()
    correct = torch.zeros(len(type_names))
    total = torch.zeros(len(type_names))
    with torch.no_grad():
        for start in range(0, len(batches), batches.batch_size):
            inputs, answers = batches.batch(torch.arange(start, min(start + batches.batch_size, len(batches))))
            hits = (model(inputs.to(device)).argmax(1).cpu() == answers).float()
            correct.index_add_(0, inputs.question_types, hits)
            total.index_add_(0, inputs.question_types, torch.ones_like(hits))
    model.train(was_training)
    per_type = {type_names[i]: float(correct[i] / total[i]) for i in range(len(type_names)) if total[i] > 0}
    return float(correct.sum() / total.sum()), per_type


class Stop:
    """SIGINT/SIGTERM set a flag; the loop saves and leaves at the next batch boundary."""

    def __init__(self) -> None:
        self.asked: str | None = None

    @contextmanager
    def handling(self) -> Iterator[None]:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def ask(signum, frame) -> None:
            if self.asked:  # a second Ctrl-C: leave now
                signal.default_int_handler(signum, frame)
            self.asked = signal.Signals(signum).name

        for s in previous:
            signal.signal(s, ask)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def experience0_only(identity: dict[str, Any]) -> dict[str, Any]:
    """A spec identity with the per-experience training settings cut to the first experience's: what the later
    experiences are fine-tuned with does not touch the pretrained weights, so a preset retuned for them still
    continues its pretraining. Applied to saved identities too, which may predate the cut."""
    train = identity["config"]["train"]
    cut = {name: list(train[name])[:1] for name in ("epochs", "lr") if isinstance(train.get(name), list)}
    return identity | {"config": identity["config"] | {"train": train | cut}}


def checkpoint_path(folder: Path) -> Path:
    return Path(folder) / CHECKPOINT


def save(folder: Path, spec: PretrainSpec, progress: Progress, model, optimizer) -> Path:
    """The whole state, atomically: tensors and plain values only (loads with `weights_only=True`)."""
    from clbench.training.checkpoints import rng_state

    blob = {
        "spec": spec.identity(),
        "progress": progress.to_blob(),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    return replace_atomically(checkpoint_path(folder), lambda tmp: torch.save(blob, tmp))


def load(folder: Path) -> dict[str, Any] | None:
    path = checkpoint_path(folder)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and what to do
        raise ConfigError(
            f"{path} is not a pretraining checkpoint this version can read ({type(exc).__name__})",
            f"delete {path} to start over, or give another --out",
        ) from None


def check_continuable(blob: dict[str, Any], spec: PretrainSpec, folder: Path) -> None:
    """A checkpoint made with other settings is never continued under these: that would be neither run."""
    saved, wanted = experience0_only(blob["spec"]), spec.identity()
    if saved != wanted:
        differ = sorted(_differences(saved, wanted))
        raise ConfigError(
            f"{folder} holds a pretraining with other settings ({', '.join(differ[:4])} differ)",
            "give the same settings to continue it, or another --out to start a new one",
        )


def _differences(a: Any, b: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _differences(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def eta_to_target(curve: list[Point], target: float, rate: float) -> float | None:
    """Seconds until the accuracy reaches `target`, extrapolating the last points' accuracy against log(samples);
    None while the trend does not point there."""
    recent = [p for p in curve if p.samples > 0][-4:]
    if len(recent) < 2 or rate <= 0:
        return None
    x = np.log([p.samples for p in recent])
    y = np.array([p.accuracy for p in recent])
    slope, intercept = np.polyfit(x, y, 1)
    exponent = (target - intercept) / slope if slope > 1e-9 else math.inf
    if exponent > math.log(1e12):  # flat or falling, or a trillion samples away: no estimate
        return None
    needed = math.exp(exponent)
    return max(0.0, (needed - recent[-1].samples) / rate)


def describe_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def reached(point: Point, spec: PretrainSpec) -> bool:
    types_ok = all(v >= spec.type_target for v in point.per_type.values())
    return point.accuracy >= spec.target and types_ok


def draw_curve(curve: list[Point], path: Path, *, target: float, title: str) -> None:
    """Validation accuracy overall and per question type against samples seen (millions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    millions = [p.samples / 1e6 for p in curve]
    axis.plot(millions, [100 * p.accuracy for p in curve], color="black", linewidth=2.2, label="all")
    for name in curve[-1].per_type if curve else ():
        axis.plot(millions, [100 * p.per_type.get(name, float("nan")) for p in curve], linewidth=1.2, label=name)
    if 0 < target <= 1:
        axis.axhline(100 * target, color="gray", linestyle="--", linewidth=1, label=f"target {100 * target:.0f} %")
    axis.set_xlabel("training samples (millions)")
    axis.set_ylabel("validation accuracy (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="lower right", ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def write_curve_csv(curve: list[Point], path: Path) -> None:
    import pandas as pd

    rows = [{k: v for k, v in asdict(p).items() if k != "per_type"} | p.per_type for p in curve]
    replace_atomically(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.5g"))


def stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
