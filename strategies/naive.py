"""Naive fine-tuning: the lower bound every continual-learning method must beat."""

from clbench import Strategy, register


@register("naive")
class Naive(Strategy):
    """Plain fine-tuning of the whole model on each experience in turn: the lower bound."""

    state = "boundaries"  # no state at all
