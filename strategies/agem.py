"""Averaged GEM, through Avalanche's AGEMPlugin."""

from avalanche.training.plugins import AGEMPlugin

from clbench import Strategy, register
from clbench.strategy import require, require_positive


@register("agem")
class AGEM(Strategy):
    """Averaged GEM (Chaudhry et al. 2019): project each step against the gradient of a sample of old questions."""

    state = "within-experience"  # the buffer is filled after each experience; its sampler runs on across steps
    data_parallel = False  # each rank projects against its own sample of the memory: the ranks drift apart

    patterns_per_experience: int = 256
    sample_size: int = 64  # old questions per reference gradient

    def validate(self) -> None:
        require_positive("patterns_per_experience", self.patterns_per_experience, 256)
        require(
            0 < self.sample_size <= self.patterns_per_experience,
            f"sample_size={self.sample_size} must be between 1 and patterns_per_experience="
            f"{self.patterns_per_experience}: a sample cannot be larger than the memory it is drawn from",
            "use --set sample_size=64",
        )

    def plugins(self, model):
        return [AGEMPlugin(self.patterns_per_experience, self.sample_size)]
