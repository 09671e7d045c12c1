"""The strategy plugin contract: a small dataclass whose `plugins(model)` hands the runner Avalanche plugins.

Its fields are its parameters (CLI `--set name=value`, MLflow params). It never copies the training loop. It
is found by name, `file.py:Class` or `module:Class` through the `clbench.strategies` entry points
(`clbench.registry` holds the machinery it shares with scenarios).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clbench.registry import Plugin, PluginKind, parse_value

ENTRY_POINT_GROUP = "clbench.strategies"

__all__ = ["STRATEGIES", "Strategy", "available", "instantiate", "parse_value", "register", "resolve"]


@dataclass
class Strategy(Plugin):
    """Base class of every continual-learning strategy.

    Subclasses are dataclasses whose fields are their parameters, with defaults. Override `plugins` to add
    Avalanche plugins (EWC, replay, freezing...), and `validate` to reject bad parameter values early.
    """

    def plugins(self, model: Any) -> list[Any]:
        """Avalanche plugins that implement the strategy on top of the plain training loop."""
        return []


STRATEGIES: PluginKind[Strategy] = PluginKind(Strategy, "strategy", ENTRY_POINT_GROUP)


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: makes a Strategy dataclass known under `name`."""
    return STRATEGIES.register(name)


def available() -> dict[str, type[Strategy]]:
    return STRATEGIES.available()


def resolve(spec: str) -> type[Strategy]:
    return STRATEGIES.resolve(spec)


def instantiate(cls: type[Strategy], overrides: Mapping[str, Any]) -> Strategy:
    return STRATEGIES.instantiate(cls, overrides)
