"""Learning without Forgetting, through Avalanche's LwFPlugin."""

from avalanche.training.plugins import LwFPlugin

from clbench import Strategy, register
from clbench.strategy import require_non_negative, require_positive, searched


@register("lwf")
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): distil the previous model's answers on the new questions."""

    state = "boundaries"  # the teacher is a copy of the model taken after each experience

    alpha: float = searched(1.0, "log:1e-2:1e2")  # weight of the distillation loss
    temperature: float = searched(2.0, "float:1:8")

    def validate(self) -> None:
        require_non_negative("alpha", self.alpha, 1)
        require_positive("temperature", self.temperature, 2)

    def plugins(self, model):
        return [LwFPlugin(alpha=self.alpha, temperature=self.temperature)]
