"""Learning without Forgetting, through Avalanche's LwFPlugin."""

from avalanche.training.plugins import LwFPlugin

from clbench import Strategy, register
from clbench.strategy import require_non_negative, require_positive, searched


@register("lwf")
class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): distil the previous model's answers on the new questions.

    Defaults searched on validation data (2026-12-07, `results/tuning/clevr-humans/lwf/`):
    `python -m clbench tune --strategy lwf --trials 6 --final-seeds 0,1,2 --out results/tuning`, on the shipped
    clevr-humans-small model; the trial with the best validation average accuracy had α = 2.577 and a temperature
    of 4.814 (rounded here). Larger α forgets less and learns CLEVR-Humans worse (`frontier.png` there).
    """

    state = "boundaries"  # the teacher is a copy of the model taken after each experience

    alpha: float = searched(2.58, "log:1e-2:1e2")  # weight of the distillation loss
    temperature: float = searched(4.81, "float:1:8")

    def validate(self) -> None:
        require_non_negative("alpha", self.alpha, 1)
        require_positive("temperature", self.temperature, 2)

    def plugins(self, model):
        return [LwFPlugin(alpha=self.alpha, temperature=self.temperature)]
