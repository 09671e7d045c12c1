"""The strategy plugin contract: a dataclass of parameters that hands the runner Avalanche plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

_REGISTRY: dict[str, type[Strategy]] = {}


@dataclass
class Strategy:
    """Base class of every continual-learning strategy (placeholder, filled in by the runner work)."""

    name: ClassVar[str] = ""

    def plugins(self, model: Any) -> list[Any]:
        return []


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def decorate(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate
