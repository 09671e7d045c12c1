"""Experience replay, through Avalanche's ReplayPlugin and its experience-balanced buffer."""

from avalanche.training.plugins import ReplayPlugin

from clbench import Strategy, register
from clbench.strategy import require


@register("replay")
class Replay(Strategy):
    """Rehearsal: a buffer of earlier samples mixed into every later minibatch."""

    state = "boundaries"  # the buffer is updated after each experience; its loader is drawn from the RNG

    mem_size: int = 1000
    batch_size_mem: int | None = None

    def validate(self) -> None:
        require(self.mem_size > 0, f"mem_size={self.mem_size} must be positive", "use --set mem_size=1000")
        require(
            self.batch_size_mem is None or 0 < self.batch_size_mem <= self.mem_size,
            f"batch_size_mem={self.batch_size_mem} must be between 1 and mem_size={self.mem_size}",
            "use --set batch_size_mem=64, or leave it unset to use the training batch size",
        )

    def plugins(self, model):
        return [ReplayPlugin(mem_size=self.mem_size, batch_size_mem=self.batch_size_mem)]
