"""Riemannian Walk, through Avalanche's RWalkPlugin."""

from avalanche.training.plugins import RWalkPlugin

from clbench import Strategy, register
from clbench.strategy import require, require_non_negative, require_positive, searched


@register("rwalk")
class RWalk(Strategy):
    """Riemannian Walk (Chaudhry et al. 2018): EWC++'s online Fisher plus SI-like path scores.

    Defaults searched on validation data (2026-12-07, `results/tuning/clevr-humans/rwalk/`):
    `python -m clbench tune --strategy rwalk --trials 6 --final-seeds 0,1,2 --out results/tuning`, on the shipped
    clevr-humans-small model; the trial with the best validation average accuracy had λ = 1.963 and α = 0.850
    (rounded here). On the final seeds it forgets 6.0 points of CLEVR against naive's 13.9 (paired p = 0.048) and
    learns CLEVR-Humans 2.6 points worse (p = 0.014). At λ ≥ 634 it forgot nothing on the validation stream and
    learned CLEVR-Humans 9 points less than at 1.96 (`frontier.png` there).
    """

    state = "training"  # the Fisher and the path scores are updated at every training step
    data_parallel = False  # from each rank's own gradients and minibatch: the ranks' scores drift apart

    ewc_lambda: float = searched(1.96, "log:1e-3:1e3")
    ewc_alpha: float = searched(0.85, "float:0.5:0.99")  # the online Fisher's decay
    delta_t: int = 10  # iterations between path-score updates

    def validate(self) -> None:
        require_non_negative("ewc_lambda", self.ewc_lambda, 1.96)
        require(0 <= self.ewc_alpha <= 1, f"ewc_alpha={self.ewc_alpha} is not in [0, 1]", "use --set ewc_alpha=0.85")
        require_positive("delta_t", self.delta_t, 10)

    def plugins(self, model):
        return [RWalkPlugin(ewc_lambda=self.ewc_lambda, ewc_alpha=self.ewc_alpha, delta_t=self.delta_t)]
