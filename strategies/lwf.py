"""Learning without Forgetting, through Avalanche's LwFPlugin."""

from avalanche.training.plugins import LwFPlugin

from clbench import Strategy, register
from clbench.strategy import require_non_negative, require_positive


@register("lwf")
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): distil the previous model's answers on the new questions."""

    state = "boundaries"  # the teacher is a copy of the model taken after each experience

    alpha: float = 1.0  # weight of the distillation loss
    temperature: float = 2.0

    def validate(self) -> None:
        require_non_negative("alpha", self.alpha, 1)
        require_positive("temperature", self.temperature, 2)

    def plugins(self, model):
        return [LwFPlugin(alpha=self.alpha, temperature=self.temperature)]
