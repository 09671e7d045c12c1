"""clbench: how much does a model forget, and what fixes it?

The public surface for users writing their own strategy is ``Strategy`` and ``register``; for their own scenario,
``Scenario`` and ``register_scenario`` (with ``clbench.scenario.assembly`` to assemble one).

They are imported on first use: they bring torch and Avalanche (seconds), which `python -m clbench --help`, a
mistyped option or `clbench ui` never need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clbench.core.errors import ClbenchError

if TYPE_CHECKING:
    from clbench.scenario.contract import Scenario
    from clbench.scenario.contract import register as register_scenario
    from clbench.strategy.contract import Strategy, register

__all__ = ["ClbenchError", "Scenario", "Strategy", "register", "register_scenario"]
__version__ = "0.1.0"

_PUBLIC = {
    "Scenario": ("clbench.scenario.contract", "Scenario"),
    "register_scenario": ("clbench.scenario.contract", "register"),
    "Strategy": ("clbench.strategy.contract", "Strategy"),
    "register": ("clbench.strategy.contract", "register"),
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'clbench' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
