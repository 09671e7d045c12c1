"""Avalanche plugins corrected where, as released, they run on FiLM and silently change nothing.

Avalanche 0.6's SynapticIntelligencePlugin snapshots the weights as `param.detach().cpu().flatten()`. On a GPU
that is a copy. On CPU it is a view of the live parameter, so the "old" weights move with the new ones: every path
integral, every importance and every penalty is exactly 0, and SI trains as naive fine-tuning does. The subclass
copies the two snapshots that must stay put (the experience's starting weights and each step's weights before the
update); everything else is Avalanche's.
"""

from __future__ import annotations

from avalanche.training.plugins import SynapticIntelligencePlugin


class SynapticIntelligence(SynapticIntelligencePlugin):
    """Avalanche's SI with weight snapshots that are copies on every device."""

    def before_training_exp(self, strategy, **kwargs) -> None:
        super().before_training_exp(strategy, **kwargs)
        _own_copies(self.ewc_data[0])  # the weights the penalty pulls towards, and the path integral starts from

    def before_training_iteration(self, strategy, **kwargs) -> None:
        super().before_training_iteration(strategy, **kwargs)
        _own_copies(self.syn_data["old_theta"])  # the weights before this step's update


def _own_copies(snapshots) -> None:
    for snapshot in snapshots.values():
        snapshot.data = snapshot.data.clone()
