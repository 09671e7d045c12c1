"""Where a run's first experience comes from when a shipped model matches it (`clbench.model.pretrained`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

import torch

from clbench.config import RunConfig
from clbench.model import pretrained
from clbench.model.film import FiLM, model_identity
from clbench.scenario.assembly import Benchmark
from clbench.scenario.contract import Scenario
from clbench.strategy.contract import Strategy, takes_cache
from clbench.training import checkpoints
from clbench.training.template import make_optimizer


@dataclass(frozen=True)
class Shipped:
    record: pretrained.Record
    weights: dict[str, torch.Tensor]


def find_shipped(
    config: RunConfig,
    scenario: Scenario,
    bench: Benchmark,
    strategy: Strategy,
    experience0: dict[str, Any],
    main: bool,
    resume: checkpoints.RunCheckpoint | None,
) -> Shipped | None:
    """The shipped first-task model this run starts from, if one matches, said in one line either way; its weights
    checked against today's model before anything is written.

    Strategies that train experience 0 their own way (`experience0`: the strategy's identity, and its plugins'
    where they schedule the learning rate or stop early) and offline ones do not start from it. One whose plugins
    must see training (the `training` kind) starts from the shipped weights and trains
    experience 0's epochs on top, so its state is built from training as its contract says.
    """
    if strategy.offline() or experience0:
        return None
    if resume is not None:  # a resumed run starts from what it started from, whatever is installed now
        started = resume.meta.get("pretrained") or pretrained.NONE
        config = replace(config, train=replace(config.train, pretrained=started))
    record = pretrained.find(config, checkpoints.scenario_identity(scenario), bench)
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
    return Shipped(record, weights)


def shipped_state(model: FiLM, weights: dict[str, torch.Tensor], config: RunConfig) -> checkpoints.TrainingState:
    """Experience 0's end as a shipped model gives it: its weights, a fresh optimiser, the run's seeded RNG."""
    return checkpoints.TrainingState(weights, make_optimizer(config, model).state_dict(), checkpoints.rng_state())


def shipped_params(record: pretrained.Record | None) -> dict[str, Any]:
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
        if r.data["applies_to"]["model"] == model_identity(config.model)
    ]
    how_long = f" ≈ {samples / rates[0] / 60:.0f} min at the shipped model's pretraining speed" if rates else ""
    return (
        f"experience 0: no shipped model matches this run's scenario, data and model; it trains here: "
        f"{config.train.epochs_of(0)} epochs × {len(bench.train_datasets[0]):,} questions = {samples:,} samples"
        f"{how_long} (the progress bar shows its ETA; `python -m clbench pretrain` trains one to ship)"
    )
