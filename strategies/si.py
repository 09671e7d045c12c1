"""Synaptic Intelligence, through Avalanche's SynapticIntelligencePlugin (with its weight snapshots copied, which
as released it leaves as views of the live weights on CPU: `clbench.strategy.corrected`)."""

from clbench import Strategy, register
from clbench.strategy import SynapticIntelligence, require_non_negative, require_positive, searched


@register("si")
class SI(Strategy):
    """Synaptic Intelligence (Zenke et al. 2017): importances from each weight's path integral during training."""

    state = "training"  # the path integrals accumulate at every training step

    si_lambda: float = searched(1.0, "log:1e-2:1e4")
    eps: float = 1e-7

    def validate(self) -> None:
        require_non_negative("si_lambda", self.si_lambda, 1)
        require_positive("eps", self.eps, 1e-7)

    def plugins(self, model):
        return [SynapticIntelligence(si_lambda=self.si_lambda, eps=self.eps)]
