"""The FiLM paper's CLEVR-Humans protocol: fine-tune only the FiLM generator."""

from clbench import Strategy, register
from clbench.errors import ConfigError
from clbench.plugins import FreezeParameters


@register("generator-only")
class GeneratorOnly(Strategy):
    """Train only the FiLM generator from `from_experience` on (paper: --train_execution_engine 0)."""

    from_experience: int = 1

    def validate(self) -> None:
        if self.from_experience < 0:
            raise ConfigError("from_experience must be ≥ 0", "use --set from_experience=1")

    def plugins(self, model):
        return [FreezeParameters(lambda m: m.filmed_network(), self.from_experience)]
