"""Dark Experience Replay (and DER++), through Avalanche's DER template."""

from avalanche.training import DER as DERTemplate

from clbench import Strategy, register
from clbench.strategy import require


@register("der")
class DER(Strategy):
    """Dark Experience Replay (Buzzega et al. 2020): replay old questions with the logits they had; beta>0 is DER++."""

    state = "within-experience"  # the buffer is filled after each experience; its loader cycles across steps
    template = DERTemplate

    mem_size: int = 1000
    batch_size_mem: int = 32
    alpha: float = 0.1  # weight of the logit-matching loss
    beta: float = 0.5  # weight of the buffer's label loss: DER++ when positive, plain DER at 0

    def validate(self) -> None:
        require(self.mem_size > 0, f"mem_size={self.mem_size} must be positive", "use --set mem_size=1000")
        require(
            0 < self.batch_size_mem <= self.mem_size,
            f"batch_size_mem={self.batch_size_mem} must be between 1 and mem_size={self.mem_size}",
            "use --set batch_size_mem=32",
        )
        require(self.alpha >= 0, f"alpha={self.alpha} is negative", "use --set alpha=0.1")
        require(self.beta >= 0, f"beta={self.beta} is negative", "use --set beta=0.5 (DER++) or beta=0 (DER)")

    def template_args(self) -> dict:
        return self.params()  # mem_size, batch_size_mem, alpha, beta: DER's own arguments
