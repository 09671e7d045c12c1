"""Riemannian Walk, through Avalanche's RWalkPlugin."""

from avalanche.training.plugins import RWalkPlugin

from clbench import Strategy, register
from clbench.strategy import require, require_non_negative, require_positive, searched


@register("rwalk")
class RWalk(Strategy):
    """Riemannian Walk (Chaudhry et al. 2018): EWC++'s online Fisher plus SI-like path scores."""

    state = "training"  # the Fisher and the path scores are updated at every training step
    data_parallel = False  # from each rank's own gradients and minibatch: the ranks' scores drift apart

    ewc_lambda: float = searched(0.1, "log:1e-3:1e3")
    ewc_alpha: float = searched(0.9, "float:0.5:0.99")  # the online Fisher's decay
    delta_t: int = 10  # iterations between path-score updates

    def validate(self) -> None:
        require_non_negative("ewc_lambda", self.ewc_lambda, 0.1)
        require(0 <= self.ewc_alpha <= 1, f"ewc_alpha={self.ewc_alpha} is not in [0, 1]", "use --set ewc_alpha=0.9")
        require_positive("delta_t", self.delta_t, 10)

    def plugins(self, model):
        return [RWalkPlugin(ewc_lambda=self.ewc_lambda, ewc_alpha=self.ewc_alpha, delta_t=self.delta_t)]
