"""The experience-0 cache: CLEVR is trained once per (data, model, experience-0 training, seed) and reused.

What is kept is exactly the state at the end of experience 0's last epoch, *before* any end-of-experience
hook ran: model, optimiser and RNG states. A run that starts from it replays experience 0 with zero epochs,
so every strategy's own Avalanche hooks (EWC importances, replay buffer) run on the same model and RNG
state as in a run that trained it, and give the same result.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from avalanche.training.plugins import SupervisedPlugin

from clbench.config import RunConfig

FORMAT_VERSION = 1


def checkpoint_dir() -> Path:
    base = os.environ.get("CLBENCH_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "clbench") / "checkpoints"


def experience0_key(config: RunConfig, data_fingerprint: str) -> str:
    """Everything that decides the model at the end of experience 0, and nothing else."""
    train = config.train
    inputs = {
        "format": FORMAT_VERSION,
        "data": data_fingerprint,
        "max_train_questions": config.data.max_train_questions,
        "model": asdict(config.model),
        "train": {
            "epochs": train.epochs[0],
            "batch_size": train.batch_size,
            "lr": train.lr,
            "weight_decay": train.weight_decay,
            "amp": train.amp,
        },
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


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


@dataclass
class Experience0:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]


def _path(key: str) -> Path:
    return checkpoint_dir() / f"experience0-{key}.pt"


@contextmanager
def locked(key: str) -> Iterator[None]:
    """Hold an exclusive lock on one experience-0 key, across processes; the OS drops it if a holder dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent runs may train experience 0 twice
        yield
        return
    path = checkpoint_dir() / f"experience0-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("experience 0 (CLEVR): waiting for another run that is training it", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(key: str) -> Experience0 | None:
    path = _path(key)
    if not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return Experience0(blob["model"], blob["optimizer"], blob["rng"])


def save(key: str, state: Experience0) -> Path:
    """Atomic: write a temporary file, then rename, so a killed run never leaves a half checkpoint."""
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    torch.save({"model": state.model, "optimizer": state.optimizer, "rng": state.rng}, tmp)
    os.replace(tmp, path)
    return path


class SaveExperience0(SupervisedPlugin):
    """Saves the state at the end of experience 0's training, before other plugins' end-of-experience hooks.

    Must come first in the plugin list: Avalanche calls plugins in list order.
    """

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.saved: Path | None = None

    def after_training_exp(self, strategy, **kwargs) -> None:
        if strategy.experience.current_experience != 0 or strategy.train_epochs == 0:
            return
        state = Experience0(
            model={k: v.detach().cpu().clone() for k, v in strategy.model.state_dict().items()},
            optimizer=strategy.optimizer.state_dict(),
            rng=rng_state(),
        )
        self.saved = save(self.key, state)
