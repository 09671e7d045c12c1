"""Experience replay, through Avalanche's ReplayPlugin and its experience-balanced buffer."""

from avalanche.training.plugins import ReplayPlugin

from clbench import Strategy, register
from clbench.strategy import require_buffer, searched


@register("replay")
class Replay(Strategy):
    """Rehearsal: a buffer of earlier samples mixed into every later minibatch."""

    state = "boundaries"  # the buffer is updated after each experience; its loader is drawn from the RNG

    mem_size: int = searched(1000, "int:200:5000")
    batch_size_mem: int | None = None

    def validate(self) -> None:
        require_buffer(self.mem_size, self.batch_size_mem)

    def plugins(self, model):
        return [ReplayPlugin(mem_size=self.mem_size, batch_size_mem=self.batch_size_mem)]
