"""Frozen generator: the question encoder stays as CLEVR left it; only the FiLMed network adapts."""

from clbench import Strategy, register
from clbench.strategy import FreezeParameters, require


@register("frozen-generator")
class FrozenGenerator(Strategy):
    """Only the FiLMed network trains; the generator stays frozen (generator-only's opposite)."""

    state = "boundaries"  # freezing is decided at the start of each experience

    from_experience: int = 1

    def validate(self) -> None:
        require(self.from_experience >= 0, "from_experience must be ≥ 0", "use --set from_experience=1")

    def experience0_identity(self) -> dict:
        return {"frozen": "generator"} if self.from_experience == 0 else {}

    def plugins(self, model):
        return [FreezeParameters(lambda m: [m.generator], self.from_experience)]
