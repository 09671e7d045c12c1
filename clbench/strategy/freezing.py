"""Avalanche plugins of our own, for behaviour Avalanche has no plugin for."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from avalanche.training.plugins import SupervisedPlugin
from torch import nn


class FreezeParameters(SupervisedPlugin):
    """Freezes the parameters of chosen sub-modules from a given experience on.

    Avalanche has no freezing plugin. Frozen parameters get no gradient, so Adam (weight decay included)
    leaves them bit-identical; batch-norm statistics still follow the data, as in the FiLM paper's
    CLEVR-Humans protocol (`--set_execution_engine_eval 0`).
    """

    def __init__(self, modules: Callable[[nn.Module], Iterable[nn.Module]], from_experience: int = 1) -> None:
        super().__init__()
        self.modules = modules
        self.from_experience = from_experience

    def before_training_exp(self, strategy, **kwargs) -> None:
        frozen = strategy.experience.current_experience >= self.from_experience
        for module in self.modules(strategy.model):
            module.requires_grad_(not frozen)
