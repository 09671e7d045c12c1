"""Gradient Episodic Memory, through Avalanche's GEMPlugin."""

from avalanche.training.plugins import GEMPlugin

from clbench import Strategy, register
from clbench.strategy import require_non_negative, require_positive, searched


@register("gem")
class GEM(Strategy):
    """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017): no step may raise the loss on stored old questions."""

    state = "boundaries"  # the episodic memory is filled after each experience

    patterns_per_experience: int = 256
    memory_strength: float = searched(0.5, "float:0:1")  # the margin added to the projected gradient

    def validate(self) -> None:
        require_positive("patterns_per_experience", self.patterns_per_experience, 256)
        require_non_negative("memory_strength", self.memory_strength, 0.5)

    def plugins(self, model):
        return [GEMPlugin(self.patterns_per_experience, self.memory_strength)]
