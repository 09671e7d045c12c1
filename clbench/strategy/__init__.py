"""The strategy contract and its helpers: the door for strategy authors."""

from clbench.core.registry import parse_value
from clbench.strategy.contract import (
    STATE_KINDS,
    STRATEGIES,
    Strategy,
    StrategyRun,
    available,
    describe_shortcut,
    instantiate,
    plugins_of,
    register,
    require,
    require_buffer,
    require_non_negative,
    require_positive,
    resolve,
    shortcut,
    takes_cache,
)
from clbench.strategy.corrected import SynapticIntelligence
from clbench.strategy.freezing import FreezeParameters, FreezingStrategy
from clbench.strategy.growth import aligned, distance
from clbench.strategy.search import searched

__all__ = [
    "STATE_KINDS",
    "STRATEGIES",
    "FreezeParameters",
    "FreezingStrategy",
    "Strategy",
    "StrategyRun",
    "SynapticIntelligence",
    "aligned",
    "available",
    "describe_shortcut",
    "distance",
    "instantiate",
    "parse_value",
    "plugins_of",
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
