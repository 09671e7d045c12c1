"""Experience replay, through Avalanche's ReplayPlugin and its experience-balanced buffer."""

from avalanche.training.plugins import ReplayPlugin

from clbench import Strategy, register
from clbench.errors import ConfigError


@register("replay")
class Replay(Strategy):
    """Rehearsal: a buffer of earlier samples mixed into every later minibatch."""

    mem_size: int = 1000
    batch_size_mem: int | None = None

    def validate(self) -> None:
        if self.mem_size <= 0:
            raise ConfigError(f"mem_size={self.mem_size} must be positive", "use --set mem_size=1000")

    def plugins(self, model):
        return [ReplayPlugin(mem_size=self.mem_size, batch_size_mem=self.batch_size_mem)]
