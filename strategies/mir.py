"""Maximally Interfered Retrieval, through Avalanche's MIR template."""

from avalanche.training import MIR as MIRTemplate

from clbench import Strategy, register
from clbench.strategy import require, require_positive, searched


@register("mir")
class MIR(Strategy):
    """Maximally Interfered Retrieval (Aljundi et al. 2019): replay the stored questions a step would hurt most."""

    # The buffer it replays from leaves out the answers of the experience's last training minibatch, so an
    # experience's end cannot be rebuilt without training it.
    state = "training"
    template = MIRTemplate

    mem_size: int = searched(1000, "int:200:5000")
    subsample: int = 128  # candidates drawn from the buffer at each step
    batch_size_mem: int = 32  # the most interfered of them, replayed

    def validate(self) -> None:
        require_positive("mem_size", self.mem_size, 1000)
        require(
            0 < self.batch_size_mem <= self.subsample <= self.mem_size,
            f"need 0 < batch_size_mem ({self.batch_size_mem}) ≤ subsample ({self.subsample}) ≤ mem_size "
            f"({self.mem_size}): the replayed questions are chosen among the subsample, drawn from the buffer",
            "use --set subsample=128 --set batch_size_mem=32",
        )

    def template_args(self) -> dict:
        return {"mem_size": self.mem_size, "subsample": self.subsample, "batch_size_mem": self.batch_size_mem}
