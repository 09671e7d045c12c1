"""ER-ACE, through Avalanche's ER_ACE template."""

from avalanche.training import ER_ACE

from clbench import Strategy, register
from clbench.strategy import require_buffer, searched


@register("er-ace")
class ERACE(Strategy):
    """ER with asymmetric cross-entropy (Caccia et al. 2022): new questions only compete with their own answers."""

    state = "within-experience"  # the buffer is filled after each experience; its loader cycles across steps
    template = ER_ACE

    mem_size: int = searched(1000, "int:200:5000")
    batch_size_mem: int = 32

    def validate(self) -> None:
        require_buffer(self.mem_size, self.batch_size_mem)

    def experience0_identity(self) -> dict:
        # It fills its buffer as each experience starts, drawing from the RNG before experience 0 trains: that
        # experience's minibatches are not naive's.
        return {"er-ace": self.params()}

    def template_args(self) -> dict:
        return {"mem_size": self.mem_size, "batch_size_mem": self.batch_size_mem}
