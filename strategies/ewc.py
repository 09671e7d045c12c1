"""Elastic Weight Consolidation, through Avalanche's EWCPlugin."""

from typing import Literal

from avalanche.training.plugins import EWCPlugin

from clbench import Strategy, register
from clbench.strategy import require, require_non_negative, searched


@register("ewc")
class EWC(Strategy):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017): a quadratic pull towards old weights.

    Default λ searched on validation data (2026-12-06, `results/tuning/clevr-humans/ewc/`):
    `python -m clbench tune --strategy ewc --param ewc_lambda=log:1:1e6 --trials 6 --final-seeds 0,1,2
    --out results/tuning`, on the shipped clevr-humans-small model; the trial with the best validation average
    accuracy had λ = 1962.8 (rounded here).
    """

    state = "boundaries"  # importances computed after each experience, from its data and the model then

    ewc_lambda: float = searched(1963.0, "log:1:1e6")
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = None

    def validate(self) -> None:
        require_non_negative("ewc_lambda", self.ewc_lambda, 10000)
        require(
            self.mode != "online" or self.decay_factor is not None,
            "mode=online needs a decay_factor",
            "add --set decay_factor=0.9",
        )

    def plugins(self, model):
        return [EWCPlugin(ewc_lambda=self.ewc_lambda, mode=self.mode, decay_factor=self.decay_factor)]
