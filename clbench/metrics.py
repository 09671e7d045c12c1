"""Avalanche metrics of our own: what Avalanche has no metric for.

`QuestionTypeAccuracy` splits test accuracy by the FiLM paper's question types (Avalanche's class accuracy
splits by answer, not by type).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue

TYPE_METRIC = "Acc_QType"


def type_metric_name(stream: str, experience: int, type_name: str) -> str:
    return f"{TYPE_METRIC}/eval_phase/{stream}/Exp{experience:03d}/{type_name}"


class QuestionTypeAccuracy(PluginMetric[dict[str, float]]):
    """Accuracy per question type on each evaluated experience.

    Reads the type from the minibatch (the scenario returns it as `mbatch[2]`, a data attribute).
    """

    def __init__(self, type_names: Sequence[str]) -> None:
        super().__init__()
        self.type_names = tuple(type_names)
        self.reset()

    def reset(self) -> None:
        self._correct = torch.zeros(len(self.type_names), dtype=torch.long)
        self._total = torch.zeros(len(self.type_names), dtype=torch.long)

    def result(self) -> dict[str, float]:
        return {
            name: self._correct[i].item() / self._total[i].item()
            for i, name in enumerate(self.type_names)
            if self._total[i] > 0
        }

    def before_eval_exp(self, strategy) -> None:
        self.reset()

    def after_eval_iteration(self, strategy) -> None:
        types = strategy.mbatch[2].long().cpu()
        correct = (strategy.mb_output.argmax(dim=1) == strategy.mb_y).long().cpu()
        n = len(self.type_names)
        self._total += torch.bincount(types, minlength=n)
        self._correct += torch.bincount(types, weights=correct, minlength=n).long()

    def after_eval_exp(self, strategy) -> list[MetricValue]:
        stream = strategy.experience.origin_stream.name
        stream = stream if stream.endswith("_stream") else f"{stream}_stream"  # as Avalanche names it
        experience = strategy.experience.current_experience
        step = strategy.clock.train_iterations
        return [
            MetricValue(self, type_metric_name(stream, experience, name), value, step)
            for name, value in self.result().items()
        ]

    def __str__(self) -> str:
        return TYPE_METRIC
