"""GDumb, through Avalanche's GDumbPlugin."""

from avalanche.training.plugins import GDumbPlugin

from clbench import Strategy, register
from clbench.strategy import require_positive


@register("gdumb")
class GDumb(Strategy):
    """GDumb (Prabhu et al. 2020): a class-balanced memory, and a model trained from scratch on it alone."""

    state = "boundaries"  # the memory is updated and the model reset when each experience starts

    mem_size: int = 2000

    def validate(self) -> None:
        require_positive("mem_size", self.mem_size, 2000)

    def experience0_identity(self) -> dict:
        return {"gdumb": self.mem_size}  # experience 0 already trains on the memory alone

    def plugins(self, model):
        return [GDumbPlugin(mem_size=self.mem_size)]
