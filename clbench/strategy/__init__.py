"""The strategy contract and its helpers: the door for strategy authors."""

from clbench.core.registry import parse_value
from clbench.strategy.contract import (
    STATE_KINDS,
    STRATEGIES,
    Strategy,
    available,
    describe_shortcut,
    instantiate,
    register,
    require,
    require_buffer,
    require_non_negative,
    require_positive,
    resolve,
    shortcut,
    takes_cache,
)
from clbench.strategy.freezing import FreezeParameters, FreezingStrategy
from clbench.strategy.growth import aligned, distance
from clbench.strategy.search import searched

__all__ = [
    "STATE_KINDS",
    "STRATEGIES",
    "FreezeParameters",
    "FreezingStrategy",
    "Strategy",
    "aligned",
    "available",
    "describe_shortcut",
    "distance",
    "instantiate",
    "parse_value",
    "register",
    "require",
    "require_buffer",
    "require_non_negative",
    "require_positive",
    "resolve",
    "searched",
    "shortcut",
    "takes_cache",
]
