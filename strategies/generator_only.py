"""The FiLM paper's CLEVR-Humans protocol: fine-tune only the FiLM generator."""

from clbench import register
from clbench.strategy import FreezingStrategy


@register("generator-only")
class GeneratorOnly(FreezingStrategy):
    """The FiLM paper's CLEVR-Humans protocol: only the generator trains (frozen-generator is its opposite).

    From `from_experience` on, the FiLMed network (stem, blocks, classifier) is frozen and the question encoder
    alone learns (the reference code's `--train_execution_engine 0`), so new words and phrasings are mapped
    onto the visual reasoning CLEVR taught.
    """

    frozen = "filmed-network"

    def frozen_modules(self, model):
        return model.filmed_network()
