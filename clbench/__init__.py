"""clbench: how much does a model forget, and what fixes it?

The public surface for users writing their own strategy is ``Strategy`` and ``register``.
"""

from clbench.errors import ClbenchError
from clbench.strategy import Strategy, register

__all__ = ["ClbenchError", "Strategy", "register"]
__version__ = "0.1.0"
