"""Elastic Weight Consolidation, through Avalanche's EWCPlugin."""

from typing import Literal

from avalanche.training.plugins import EWCPlugin

from clbench import Strategy, register
from clbench.errors import ConfigError


@register("ewc")
class EWC(Strategy):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017): a quadratic pull towards old weights."""

    ewc_lambda: float = 10_000.0  # tuned on the small preset: 1000 barely restrains a fine-tuning lr of 1e-2
    mode: Literal["separate", "online"] = "separate"
    decay_factor: float | None = None

    def validate(self) -> None:
        if self.ewc_lambda < 0:
            raise ConfigError(f"ewc_lambda={self.ewc_lambda} is negative", "use --set ewc_lambda=10000")
        if self.mode == "online" and self.decay_factor is None:
            raise ConfigError("mode=online needs a decay_factor", "add --set decay_factor=0.9")

    def plugins(self, model):
        return [EWCPlugin(ewc_lambda=self.ewc_lambda, mode=self.mode, decay_factor=self.decay_factor)]
