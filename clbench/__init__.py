"""clbench: how much does a model forget, and what fixes it?

The public surface for users writing their own strategy is ``Strategy`` and ``register``; for their own scenario,
``Scenario`` and ``register_scenario`` (with ``clbench.benchmark`` to assemble one).
"""

from clbench.errors import ClbenchError
from clbench.scenario import Scenario
from clbench.scenario import register as register_scenario
from clbench.strategy import Strategy, register

__all__ = ["ClbenchError", "Scenario", "Strategy", "register", "register_scenario"]
__version__ = "0.1.0"
