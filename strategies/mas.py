"""Memory Aware Synapses, through Avalanche's MASPlugin."""

from avalanche.training.plugins import MASPlugin

from clbench import Strategy, register
from clbench.strategy import require, require_non_negative, searched


@register("mas")
class MAS(Strategy):
    """Memory Aware Synapses (Aljundi et al. 2018): importances from the output's sensitivity to each weight.

    Defaults searched on validation data (2026-12-07, `results/tuning/clevr-humans/mas/`):
    `python -m clbench tune --strategy mas --trials 6 --final-seeds 0,1,2 --out results/tuning`, on the shipped
    clevr-humans-small model; the trial with the best validation average accuracy had λ = 41.36 and α = 0.545
    (rounded here). On the final seeds it forgets 4.4 points of CLEVR against naive's 13.9 (paired p = 0.035) but
    learns CLEVR-Humans 11.7 points worse (p = 0.006). Every λ searched (3.5 to 6053) cost that much learning;
    `frontier.png` there shows the trade.
    """

    state = "boundaries"  # importances computed after each experience, from its data and the model then

    lambda_reg: float = searched(41.4, "log:1e-2:1e4")
    alpha: float = searched(0.54, "float:0:1")  # how much of the old importance is kept when the new one is added

    def validate(self) -> None:
        require_non_negative("lambda_reg", self.lambda_reg, 41.4)
        require(0 <= self.alpha <= 1, f"alpha={self.alpha} is not in [0, 1]", "use --set alpha=0.54")

    def plugins(self, model):
        return [MASPlugin(lambda_reg=self.lambda_reg, alpha=self.alpha)]
