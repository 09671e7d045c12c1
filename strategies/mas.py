"""Memory Aware Synapses, through Avalanche's MASPlugin."""

from avalanche.training.plugins import MASPlugin

from clbench import Strategy, register
from clbench.strategy import require, require_non_negative, searched


@register("mas")
class MAS(Strategy):
    """Memory Aware Synapses (Aljundi et al. 2018): importances from the output's sensitivity to each weight."""

    state = "boundaries"  # importances computed after each experience, from its data and the model then

    lambda_reg: float = searched(1.0, "log:1e-2:1e4")
    alpha: float = searched(0.5, "float:0:1")  # how much of the old importance is kept when the new one is added

    def validate(self) -> None:
        require_non_negative("lambda_reg", self.lambda_reg, 1)
        require(0 <= self.alpha <= 1, f"alpha={self.alpha} is not in [0, 1]", "use --set alpha=0.5")

    def plugins(self, model):
        return [MASPlugin(lambda_reg=self.lambda_reg, alpha=self.alpha)]
