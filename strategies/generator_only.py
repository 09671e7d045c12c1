"""The FiLM paper's CLEVR-Humans protocol: fine-tune only the FiLM generator."""

from clbench import Strategy, register
from clbench.strategy import FreezeParameters, require


@register("generator-only")
class GeneratorOnly(Strategy):
    """The FiLM paper's CLEVR-Humans protocol: only the generator trains (frozen-generator is its opposite).

    From `from_experience` on, the FiLMed network (stem, blocks, classifier) is frozen and the question encoder
    alone learns (the reference code's `--train_execution_engine 0`), so new words and phrasings are mapped
    onto the visual reasoning CLEVR taught.
    """

    state = "boundaries"  # freezing is decided at the start of each experience

    from_experience: int = 1

    def validate(self) -> None:
        require(self.from_experience >= 0, "from_experience must be ≥ 0", "use --set from_experience=1")

    def experience0_identity(self) -> dict:
        return {"frozen": "filmed-network"} if self.from_experience == 0 else {}

    def plugins(self, model):
        return [FreezeParameters(lambda m: m.filmed_network(), self.from_experience)]
