"""Cumulative training, through Avalanche's Cumulative template: the upper bound for a sequence."""

from avalanche.training import Cumulative as CumulativeTemplate

from clbench import Strategy, register


@register("cumulative")
class Cumulative(Strategy):
    """Reference: at each experience, train on it and on every earlier one (the sequence's upper bound)."""

    state = "boundaries"  # the data seen so far is gathered as each experience starts
    template = CumulativeTemplate
