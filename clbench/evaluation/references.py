"""The reference models two measures compare a strategy with, trained once and cached.

- **scratch**: for each experience after the first, a model trained from scratch on that experience alone
  (forward transfer: did what came before help?). It gets that experience's epochs and the first experience's
  learning rate, the one chosen for a freshly initialised model.
- **joint**: one model trained on the union of all experiences, as the `joint` strategy does (intransigence:
  how far is a strategy from what the data allows?).

Each is cached as a small JSON file of test accuracies, keyed by everything that decides it (data, scenario with
its parameters, model, training settings, seed), under a lock, so the cells of a sweep that share a reference
wait for one of them to train it instead of each training their own.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import JointTraining
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from clbench.config import RunConfig
from clbench.core.paths import replace_atomically
from clbench.evaluation.metrics import accuracy_key
from clbench.model.film import model_identity
from clbench.scenario.assembly import Benchmark
from clbench.training import checkpoints
from clbench.training.template import film_template

KINDS = ("scratch", "joint")
FORMAT = 1


def key(kind: str, config: RunConfig, scenario: Any, fingerprint: str) -> str:
    """Everything that decides a reference's accuracies; not the evaluation settings or the device."""
    inputs = {
        "format": FORMAT,
        "kind": kind,
        "data": fingerprint,
        "scenario": {"name": scenario.name, **scenario.params()},
        "max_train_questions": config.data.max_train_questions,
        "max_test_questions": config.data.max_test_questions,
        "model": model_identity(config.model),
        "train": {k: v for k, v in asdict(config.train).items() if k not in ("num_workers", "reuse_experience0")},
        "seed": config.seed,
    }
    return checkpoints.digest(inputs)


def accuracies(
    config: RunConfig,
    scenario: Any,
    bench: Benchmark,
    device: torch.device,
    make_model: Callable[[], torch.nn.Module],
) -> dict[str, dict[str, float]]:
    """kind → test set → accuracy, from the cache or trained now (and cached)."""
    out = {}
    for kind in KINDS:
        name = key(kind, config, scenario, bench.fingerprint)
        path = checkpoints.checkpoint_dir() / "references" / f"{kind}-{name}.json"
        with checkpoints.locked(f"reference-{name}", f"the {kind} reference"):
            if not path.is_file():
                trained = (_scratch if kind == "scratch" else _joint)(config, bench, device, make_model)
                path.parent.mkdir(parents=True, exist_ok=True)
                replace_atomically(path, lambda tmp, values=trained: tmp.write_text(json.dumps(values)))
            out[kind] = json.loads(path.read_text())
    return out


def _scratch(
    config: RunConfig, bench: Benchmark, device: torch.device, make_model: Callable[[], torch.nn.Module]
) -> dict[str, float]:
    values = {}
    for j in range(1, len(bench.experience_names)):
        name = bench.experience_names[j]
        print(f"reference: training a model from scratch on {name} alone (cached once trained)", file=sys.stderr)
        template = _template(config, device, make_model, config.train.epochs_of(j))
        template.train(bench.train_stream[j])
        values[bench.test_names[j]] = template.eval([bench.test_stream[j]])[accuracy_key(j)]
    return values


def _joint(
    config: RunConfig, bench: Benchmark, device: torch.device, make_model: Callable[[], torch.nn.Module]
) -> dict[str, float]:
    print("reference: training one model jointly on every experience (cached once trained)", file=sys.stderr)
    template = _template(config, device, make_model, config.train.epochs_of(0), JointTraining)
    template.train(list(bench.train_stream))
    metrics = template.eval(bench.test_stream)
    return {test: metrics[accuracy_key(j)] for j, test in enumerate(bench.test_names)}


def _template(
    config: RunConfig,
    device: torch.device,
    make_model: Callable[[], torch.nn.Module],
    epochs: int,
    base: type | None = None,
) -> Any:
    RNGManager.set_random_seeds(config.seed)
    model = make_model()
    with warnings.catch_warnings():  # "no loggers specified": a reference's accuracies are read, not logged
        warnings.simplefilter("ignore", UserWarning)
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    return film_template(config, model, device, epochs=epochs, base=base, evaluator=evaluator)
