"""Freezing part of FiLM from an experience on: the plugin (Avalanche has none) and the strategy base that
generator-only and frozen-generator share."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from avalanche.training.plugins import SupervisedPlugin
from torch import nn

from clbench.strategy.contract import Strategy, require


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


@dataclass
class FreezingStrategy(Strategy):
    """A strategy that freezes one part of FiLM from `from_experience` on and trains the rest: a subclass names
    the part (`frozen`, as experience-0 cache keys know it) and returns its modules (`frozen_modules`)."""

    state = "boundaries"  # freezing is decided at the start of each experience
    frozen: ClassVar[str] = ""

    from_experience: int = 1

    def validate(self) -> None:
        require(self.from_experience >= 0, "from_experience must be ≥ 0", "use --set from_experience=1")

    def experience0_identity(self) -> dict:
        return {"frozen": self.frozen} if self.from_experience == 0 else {}

    def plugins(self, model):
        return [FreezeParameters(self.frozen_modules, self.from_experience)]

    def frozen_modules(self, model: nn.Module) -> list[nn.Module]:
        raise NotImplementedError
