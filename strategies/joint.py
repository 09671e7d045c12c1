"""Joint training, through Avalanche's JointTraining template: the offline reference."""

from avalanche.training import JointTraining

from clbench import Strategy, register


@register("joint")
class Joint(Strategy):
    """Reference: one model trained offline on the union of all experiences (intransigence is measured to it).

    It trains once, with the first experience's epochs and learning rate, and is evaluated once: its accuracy
    matrix has one row, so it has no forgetting.
    """

    state = "boundaries"  # no state beyond the model
    template = JointTraining
