"""Dark Experience Replay (and DER++), through Avalanche's DER template."""

from avalanche.training import DER as DERTemplate

from clbench import Strategy, register
from clbench.strategy import require_buffer, require_non_negative, searched


@register("der")
class DER(Strategy):
    """Dark Experience Replay (Buzzega et al. 2020): replay old questions with the logits they had; beta>0 is DER++."""

    state = "within-experience"  # the buffer is filled after each experience; its loader cycles across steps
    template = DERTemplate

    mem_size: int = 1000
    batch_size_mem: int = 32
    alpha: float = searched(0.1, "log:1e-2:10")  # weight of the logit-matching loss
    beta: float = searched(0.5, "float:0:1")  # weight of the buffer's label loss: DER++ when positive, plain DER at 0

    def validate(self) -> None:
        require_buffer(self.mem_size, self.batch_size_mem)
        require_non_negative("alpha", self.alpha, 0.1)
        require_non_negative("beta", self.beta, "0.5 (DER++) or beta=0 (DER)")

    def template_args(self) -> dict:
        return self.params()  # mem_size, batch_size_mem, alpha, beta: DER's own arguments
