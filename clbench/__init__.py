"""clbench: how much does a model forget, and what fixes it?

The public surface for users writing their own strategy is ``Strategy`` and ``register``; for their own scenario,
``Scenario`` and ``register_scenario`` (with ``clbench.scenario.assembly`` to assemble one).
"""

from clbench.core.errors import ClbenchError
from clbench.scenario.contract import Scenario
from clbench.scenario.contract import register as register_scenario
from clbench.strategy.contract import Strategy, register

__all__ = ["ClbenchError", "Scenario", "Strategy", "register", "register_scenario"]
__version__ = "0.1.0"
