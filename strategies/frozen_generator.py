"""Frozen generator: the question encoder stays as CLEVR left it; only the FiLMed network adapts."""

from clbench import register
from clbench.strategy import FreezingStrategy


@register("frozen-generator")
class FrozenGenerator(FreezingStrategy):
    """Only the FiLMed network trains; the generator stays frozen (generator-only's opposite)."""

    frozen = "generator"

    def frozen_modules(self, model):
        return [model.generator]
