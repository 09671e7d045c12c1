"""Frozen generator: the question encoder stays as CLEVR left it; only the FiLMed network adapts."""

from clbench import Strategy, register
from clbench.errors import ConfigError
from clbench.plugins import FreezeParameters


@register("frozen-generator")
class FrozenGenerator(Strategy):
    """Freeze the FiLM generator from experience `from_experience` on; train the FiLMed network."""

    from_experience: int = 1

    def validate(self) -> None:
        if self.from_experience < 0:
            raise ConfigError("from_experience must be ≥ 0", "use --set from_experience=1")

    def plugins(self, model):
        return [FreezeParameters(lambda m: [m.generator], self.from_experience)]
