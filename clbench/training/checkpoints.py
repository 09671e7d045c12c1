"""Checkpoints: the experience-0 cache, and run checkpoints that let an interrupted run continue.

The experience-0 cache: experience 0 is trained once per (scenario, data, model, its training, seed) and
reused. What is kept is exactly the state at the end of experience 0's last epoch, *before* any
end-of-experience work ran: model, optimiser and RNG states. A run that starts from it replays experience 0
with zero epochs, so every strategy's own Avalanche hooks (EWC importances, replay buffer) run on the same
model and RNG state as in a run that trained it, and give the same result, for the strategies whose state
allows it (`clbench.strategy.STATE_KINDS`).

Run checkpoints (`runs/<mlflow run id>.pt`) are written after every epoch and experience. Everything is saved
as tensors and plain values, and loaded with `torch.load(..., weights_only=True)`; writes are atomic.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.training.plugins import SupervisedPlugin

from clbench.config import RunConfig
from clbench.core.errors import ConfigError
from clbench.core.locks import lease_lock
from clbench.core.paths import cache_root, replace_atomically
from clbench.model.film import model_identity
from clbench.strategy.applicable import lr_schedulers
from clbench.training import distributed

FORMAT_VERSION = 1


def checkpoint_dir() -> Path:
    return cache_root() / "checkpoints"


def scenario_identity(scenario: Any) -> dict[str, Any]:
    """The scenario's name and what its first experience depends on: runs agreeing on it share experience 0.

    The validation share decides which questions experience 0 trains on, so it is part of it; only when set, so
    the keys (and shipped models) of runs without a validation split stay as they were."""
    identity = {"name": scenario.name, **scenario.experience0_identity()}
    share = getattr(scenario, "validation", 0)
    return identity | ({"validation": share} if share else {})


def experience0_key(
    config: RunConfig,
    data_fingerprint: str,
    scenario: dict[str, Any] | None = None,
    strategy: dict[str, Any] | None = None,
) -> str:
    """Everything that decides the model at the end of experience 0, and nothing else.

    `scenario` is `scenario_identity(...)`, `strategy` the strategy's `experience0_identity()` (empty for the
    many that train experience 0 as naive fine-tuning does); a sweep groups its cells by this key without the
    data fingerprint.
    """
    train = config.train
    inputs = {
        "format": FORMAT_VERSION,
        "data": data_fingerprint,
        "scenario": scenario or {},
        "max_train_questions": config.data.max_train_questions,
        "model": model_identity(config.model),
        "train": {
            "epochs": train.epochs_of(0),
            "batch_size": train.batch_size,
            "lr": train.lr_of(0),
            "weight_decay": train.weight_decay,
            "amp": train.amp,
            **({"compile": True} if train.compile else {}),  # only when on: older cache keys stay valid
        },
        "seed": config.seed,
    }
    if strategy:  # only when set: the keys of strategies that train experience 0 plainly stay as they were
        inputs["strategy"] = strategy
    if distributed.world() > 1:  # per-rank batch-norm statistics: N processes train another experience 0
        inputs["processes"] = distributed.world()
    return digest(inputs)


def digest(inputs: Any, length: int = 20) -> str:
    """A short, stable hash of JSON-able inputs: the key of a cache entry (experience 0, a reference) or a sweep."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:length]


def rng_state() -> dict[str, Any]:
    """All RNG states, as tensors and plain values only, so checkpoints load with `weights_only=True`."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# The iteration counters of Avalanche's clock: the steps every training metric is logged at. Restored with a
# state, so a resumed or cached run logs its iterations at the steps the run that trained them would have.
_CLOCK_COUNTERS = ("train_iterations", "train_exp_iterations", "total_iterations")


@dataclass
class TrainingState:
    """Model, optimiser, gradient-scaler, RNG and clock states at one instant, and those of the learning-rate
    schedulers the strategy's plugins step (`clbench.strategy.applicable.lr_schedulers`): tensors and plain values
    only."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    scaler: dict[str, Any] | None = None
    clock: dict[str, int] | None = None  # None in entries written before clocks were kept
    schedulers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def capture(cls, strategy) -> TrainingState:
        scaler = getattr(strategy, "scaler", None)
        return cls(
            model={k: v.detach().cpu().clone() for k, v in strategy.model.state_dict().items()},
            optimizer=copy.deepcopy(strategy.optimizer.state_dict()),
            rng=rng_state(),
            scaler=scaler.state_dict() if scaler is not None else None,
            clock={name: int(getattr(strategy.clock, name)) for name in _CLOCK_COUNTERS},
            schedulers=[copy.deepcopy(s.state_dict()) for s in lr_schedulers(strategy.plugins)],
        )

    def restore(self, strategy) -> None:
        strategy.model.load_state_dict(self.model)
        strategy.optimizer.load_state_dict(self.optimizer)
        scaler = getattr(strategy, "scaler", None)
        if scaler is not None and self.scaler:
            scaler.load_state_dict(self.scaler)
        set_rng_state(self.rng)
        for name, value in (self.clock or {}).items():
            setattr(strategy.clock, name, value)
        if self.schedulers:  # none in a shipped model's state: its schedulers start fresh, as they were built
            for scheduler, state in zip(lr_schedulers(strategy.plugins), self.schedulers, strict=True):
                scheduler.load_state_dict(copy.deepcopy(state))

    def to_blob(self) -> dict[str, Any]:
        blob = {"model": self.model, "optimizer": self.optimizer, "rng": self.rng, "scaler": self.scaler}
        blob |= {"schedulers": self.schedulers} if self.schedulers else {}
        return blob | ({"clock": self.clock} if self.clock is not None else {})

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> TrainingState:
        return cls(
            blob["model"], blob["optimizer"], blob["rng"], blob.get("scaler"), blob.get("clock"),
            blob.get("schedulers", []),
        )  # fmt: skip


def _save_atomic(blob: dict[str, Any], path: Path) -> Path:
    return replace_atomically(path, lambda tmp: torch.save(blob, tmp))


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or not a checkpoint at all
        raise ConfigError(
            f"checkpoint {path} cannot be read ({type(exc).__name__})", f"delete {path}; it will be rebuilt"
        ) from None


# --- the experience-0 cache ----------------------------------------------------------------------------------


@contextmanager
def locked(key: str, what: str = "experience 0") -> Iterator[None]:
    """Hold an exclusive lock on one cache key (experience 0's, a reference's) across processes and machines that
    share the cache folder (`clbench.core.locks`); a holder that dies loses it."""
    with lease_lock(checkpoint_dir() / f"{key}.lock", what):
        yield


def _path(key: str) -> Path:
    return checkpoint_dir() / f"experience0-{key}.pt"


def load(key: str) -> TrainingState | None:
    path = _path(key)
    return TrainingState.from_blob(_load(path)) if path.is_file() else None


def save(key: str, state: TrainingState) -> Path:
    return _save_atomic(state.to_blob(), _path(key))


# --- run checkpoints: resume an interrupted run --------------------------------------------------------------


@dataclass
class RunCheckpoint:
    """Where a run stands: enough to continue it in the same MLflow run after any interruption.

    Strategy state (EWC importances, the replay buffer) is not pickled: Avalanche plugins hold datasets and
    closures that `weights_only=True` cannot load. It is rebuilt exactly instead, as the strategy's `state`
    kind allows (`clbench.strategy.STATE_KINDS`). Every finished experience is replayed from its `boundaries`
    state with zero epochs, so each plugin's own end-of-experience hooks run again on the same model and RNG
    state, as the experience-0 cache does; the interrupted experience continues from `current`, or starts
    again (`at_experience_start`). A strategy whose state grows during training starts again from its first
    experience (`restarted`): a seeded run retrains to the same state, and what it had logged (`logged`
    experiences) is not logged twice.
    """

    run_id: str
    meta: dict[str, Any]  # experiment, run name, tracking URI, config, strategy spec and parameters
    boundaries: list[TrainingState] = field(default_factory=list)  # end of each finished experience
    experience: int = 0  # the experience in progress
    epochs_done: int = 0  # its finished epochs
    current: TrainingState | None = None  # the state after those epochs
    logged: int = 0  # experiences whose training and evaluation metrics are in the MLflow run
    curves: dict[str, Any] = field(default_factory=dict)  # continual evaluation so far (clbench.evaluation.periodic)
    valid_curves: dict[str, Any] = field(default_factory=dict)  # the same, on the validation stream

    def resumed_as(self, shortcut: str) -> RunCheckpoint:
        """What a resume continues from, by the strategy's shortcut (`clbench.strategy.shortcut`)."""
        if shortcut == "replay":
            return self
        return self.at_experience_start() if shortcut == "replay-ends" else self.restarted()

    def at_experience_start(self) -> RunCheckpoint:
        """The same run without its mid-experience state: the interrupted experience starts again."""
        return RunCheckpoint(
            self.run_id,
            self.meta,
            self.boundaries,
            self.experience,
            logged=self.logged,
            curves=self.curves,
            valid_curves=self.valid_curves,
        )

    def restarted(self) -> RunCheckpoint:
        """The same run from its start, remembering what it has logged."""
        logged = max(self.logged, len(self.boundaries))
        return RunCheckpoint(self.run_id, self.meta, logged=logged, curves=self.curves, valid_curves=self.valid_curves)

    def to_blob(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "run_id": self.run_id,
            "meta": self.meta,
            "boundaries": [b.to_blob() for b in self.boundaries],
            "experience": self.experience,
            "epochs_done": self.epochs_done,
            "current": self.current.to_blob() if self.current is not None else None,
            "logged": self.logged,
            "curves": self.curves,
            "valid_curves": self.valid_curves,
        }

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> RunCheckpoint:
        current = blob["current"]
        return cls(
            run_id=blob["run_id"],
            meta=blob["meta"],
            boundaries=[TrainingState.from_blob(b) for b in blob["boundaries"]],
            experience=blob["experience"],
            epochs_done=blob["epochs_done"],
            current=TrainingState.from_blob(current) if current is not None else None,
            logged=blob.get("logged", blob["experience"]),  # older checkpoints: every finished experience
            curves=blob.get("curves", {}),
            valid_curves=blob.get("valid_curves", {}),
        )


def run_path(run_id: str) -> Path:
    return checkpoint_dir() / "runs" / f"{run_id}.pt"


def _save_run(checkpoint: RunCheckpoint) -> Path:
    return _save_atomic(checkpoint.to_blob(), run_path(checkpoint.run_id))


def load_run(run_id: str | None) -> RunCheckpoint:
    """The checkpoint of `run_id`, or of the most recently interrupted run when `run_id` is None."""
    folder = checkpoint_dir() / "runs"
    if run_id is None:
        found = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if not found:
            raise ConfigError(f"no interrupted run to resume (no checkpoint in {folder})", "start a new run instead")
        path = found[-1]
    else:
        path = run_path(run_id)
        if not path.is_file():
            raise ConfigError(
                f"no checkpoint for run {run_id} in {folder} (finished runs keep none)",
                "check the run id, or run `python -m clbench run --resume` for the latest interrupted run",
            )
    return RunCheckpoint.from_blob(_load(path))


def delete_run(run_id: str) -> None:
    run_path(run_id).unlink(missing_ok=True)


class Checkpointer(SupervisedPlugin):
    """Writes the run checkpoint after every epoch and experience, and restores saved states on request.

    The state of an experience's end is taken in `experience_ending`, which the template calls before its own
    end-of-experience work and before any plugin's `after_training_exp` (`clbench.training.template.LoopAdditions`).
    A restored state is put in place as late as the original run had it: a mid-experience state when the
    first remaining epoch starts (after every plugin's start-of-experience hooks, which may reset the model
    as GDumb does), an experience's end when that end comes. Must come first in the plugin list (Avalanche
    calls plugins in list order), so that a restored epoch is in place before other plugins' hooks see it. An
    epoch's state is taken by `epoch_saver()`, which goes right after the strategy's plugins: after their
    end-of-epoch hooks (a scheduler's step), and before the evaluator sends the epoch's metrics, so a stopped run
    has never logged an epoch its checkpoint lacks.
    """

    def __init__(self, checkpoint: RunCheckpoint, experience0_key: str | None = None, *, write: bool = True) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.experience0_key = experience0_key
        self.write = write  # False on the ranks of a torchrun job other than 0: they restore, but write once
        self._pending: TrainingState | None = None
        self._epochs = 0
        self._trained = 0

    def restore_at_start(self, state: TrainingState, epochs_done: int = 0) -> None:
        """Load `state` in the next training experience, counting `epochs_done` of its epochs as finished."""
        self._pending, self._epochs = state, epochs_done

    def _restore_pending(self, strategy) -> None:
        if self._pending is not None:
            self._pending.restore(strategy)
            self._pending = None

    def before_training_exp(self, strategy, **kwargs) -> None:
        if self._pending is None:
            self._epochs = 0
        self._trained = 0

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if self._pending is not None:
            strategy.clock.train_exp_epochs = self._epochs  # this experience's epochs done before the restore
        self._restore_pending(strategy)

    def epoch_saver(self) -> SupervisedPlugin:
        """The plugin that takes each epoch's state, to place after the strategy's plugins."""
        return _EpochSaver(self)

    def epoch_ended(self, strategy) -> None:
        """The state the next epoch starts from, written to the run checkpoint."""
        self._epochs += 1
        self._trained += 1
        self.checkpoint.experience = strategy.experience.current_experience
        self.checkpoint.epochs_done = self._epochs
        self.checkpoint.current = TrainingState.capture(strategy)
        if self.write:
            _save_run(self.checkpoint)

    def experience_ending(self, strategy) -> None:
        self._restore_pending(strategy)  # a replayed experience: no epoch ran, its end is the saved one
        i = strategy.experience.current_experience
        self.checkpoint.boundaries = [*self.checkpoint.boundaries[:i], TrainingState.capture(strategy)]

    def after_training_exp(self, strategy, **kwargs) -> None:
        i = strategy.experience.current_experience
        if i == 0 and self._trained and self.experience0_key is not None and self.write:
            save(self.experience0_key, self.checkpoint.boundaries[0])

    def experience_done(self, i: int) -> None:
        """Called once experience `i` is trained and evaluated (or replayed: then a later experience's
        mid-experience state, which a resumed run is about to continue from, stays)."""
        if self.checkpoint.experience <= i:
            self.checkpoint.experience, self.checkpoint.epochs_done, self.checkpoint.current = i + 1, 0, None
        self.checkpoint.logged = max(self.checkpoint.logged, i + 1)
        if self.write:
            _save_run(self.checkpoint)


class _EpochSaver(SupervisedPlugin):
    """`Checkpointer.epoch_ended` at its place in the plugin list (`Checkpointer.epoch_saver`)."""

    def __init__(self, checkpointer: Checkpointer) -> None:
        super().__init__()
        self.checkpointer = checkpointer

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self.checkpointer.epoch_ended(strategy)
