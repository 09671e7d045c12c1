"""What a run measured, as data: the accuracy matrix and everything derived from it; the same numbers are in its
MLflow run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from clbench.evaluation import measures
from clbench.evaluation.metrics import FiLMSnapshot


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
    cost: dict[str, float] = field(default_factory=dict)  # see clbench.evaluation.cost; named in names (cost/...)

    continual: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (during, test): min, gap, recovery
    continual_summary: dict[str, float] = field(default_factory=dict)  # min_acc, wc_acc
    curves: dict[str, Any] = field(default_factory=dict)  # the periodic-evaluation points (evaluation.periodic)
    flips: pd.DataFrame = field(default_factory=pd.DataFrame)  # per earlier test set: negative, positive rate
    type_forgetting: pd.DataFrame = field(default_factory=pd.DataFrame)  # earlier test set × question type
    references: dict[str, dict[str, float]] = field(default_factory=dict)  # "scratch"/"joint" → test → accuracy
    # the same rows on the validation stream (columns: validation sets), and its min-ACC and WC-ACC
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)
    validation_summary: dict[str, float] = field(default_factory=dict)

    # The measures, each defined in clbench.evaluation.measures.
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
        """The run's results as the console shows them (`clbench.run.render`)."""
        from clbench.run.render import summary

        return summary(self)


@dataclass
class Measured:
    """What the evaluation after one experience gave: a row of the accuracy matrix and its details."""

    accuracy: list[float]
    film: dict[int, FiLMSnapshot]
    per_type: dict[tuple[str, str], dict[str, float]]
    predictions: dict[int, Any] = field(default_factory=dict)  # test experience → [2, questions]: predicted, true
    validation: list[float] = field(default_factory=list)  # accuracy on each validation set
