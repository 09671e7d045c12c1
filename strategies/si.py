"""Synaptic Intelligence, through Avalanche's SynapticIntelligencePlugin (with its weight snapshots copied, which
as released it leaves as views of the live weights on CPU: `clbench.strategy.corrected`)."""

from clbench import Strategy, register
from clbench.strategy import SynapticIntelligence, require_non_negative, require_positive, searched


@register("si")
class SI(Strategy):
    """Synaptic Intelligence (Zenke et al. 2017): importances from each weight's path integral during training.

    Default λ searched on validation data (2026-12-07, `results/tuning/clevr-humans/si/`):
    `python -m clbench tune --strategy si --param si_lambda=log:0.01:10000 --trials 6 --final-seeds 0,1,2
    --out results/tuning`, on the shipped clevr-humans-small model; the trial with the best validation average
    accuracy had λ = 18.59 (62.8 %), short of naive fine-tuning on the same seed (63.7 %): every λ searched traded
    learning for remembering, forgetting 4 points of CLEVR at λ = 6341 against 11 at 18.6 while learning
    CLEVR-Humans worse (44 % against 56 %); `frontier.png` there shows the trade.
    """

    state = "training"  # the path integrals accumulate at every training step

    si_lambda: float = searched(18.59, "log:1e-2:1e4")
    eps: float = 1e-7

    def validate(self) -> None:
        require_non_negative("si_lambda", self.si_lambda, 1)
        require_positive("eps", self.eps, 1e-7)

    def plugins(self, model):
        return [SynapticIntelligence(si_lambda=self.si_lambda, eps=self.eps)]
