"""What one run is made of: built once (`clbench.run.loop`), read by every step of the run instead of a dozen
arguments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from clbench.config import RunConfig
from clbench.evaluation import periodic as continual
from clbench.evaluation.metrics import FiLMStatistics, Predictions
from clbench.evaluation.validation import ValidationEvaluation
from clbench.model.film import FiLM
from clbench.run.shipped import Shipped
from clbench.scenario.assembly import Benchmark
from clbench.scenario.contract import Scenario
from clbench.strategy.contract import Strategy
from clbench.training import checkpoints
from clbench.training.template import FiLMTemplate


@dataclass
class RunContext:
    """Everything one run is made of, built once and read by every step below instead of a dozen arguments."""

    config: RunConfig
    strategy: Strategy
    scenario: Scenario
    names: tuple[str, ...]  # the scenario's experiences
    bench: Benchmark
    model: FiLM
    device: torch.device
    main: bool  # rank 0 (or the only process): it logs, evaluates and prints
    progress: bool
    experiment: str
    run_name: str
    uri: str
    key: str  # the experience-0 cache key
    reuse: bool  # whether experience 0 may come from the cache
    shipped: Shipped | None
    resume: checkpoints.RunCheckpoint | None
    specs: tuple[str | None, str | None]  # how the strategy and scenario were named (for --resume)
    optimizer: torch.optim.Optimizer
    plugins: list[Any]  # the strategy's, built once on the run (`StrategyRun`)
    # set once the MLflow run exists
    run_id: str = ""
    checkpoint: checkpoints.RunCheckpoint | None = None
    checkpointer: checkpoints.Checkpointer | None = None
    logger: Any = None
    watcher: continual.ContinualEvaluation | None = None
    film_stats: FiLMStatistics = field(default_factory=FiLMStatistics)
    predictions: Predictions = field(default_factory=Predictions)
    template: FiLMTemplate | None = None
    experience0_trained: bool = False  # trained in this run (not from the cache, a shipped model or a checkpoint)
    validator: ValidationEvaluation | None = None  # the validation stream, where the scenario holds one out
    valid_watcher: continual.ContinualEvaluation | None = None  # continual evaluation of the validation sets
    observer: Callable[[int, Any], None] | None = None  # told each experience's `Measured` as it is evaluated

    @property
    def rows(self) -> tuple[str, ...]:
        """The accuracy matrix's rows: one per experience, or one for an offline strategy."""
        return self.names[-1:] if self.strategy.offline() else self.names
