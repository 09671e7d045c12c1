"""Search spaces of strategy parameters, declared beside each field and read by `clbench tune`.

A strategy says where a parameter is worth searching as metadata on its dataclass field:
`ewc_lambda: float = searched(10_000.0, "log:1:1e6")`. A space is written as `--param` takes it: `log:LOW:HIGH`
(log-uniform, LOW > 0), `float:LOW:HIGH`, `int:LOW:HIGH`, or `choice:A,B,...` (values parsed by the field's
type). Nothing here imports Optuna: `Space.suggest` asks whatever trial it is handed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from clbench.core.errors import ConfigError

SEARCH = "search"  # the field-metadata key a space is declared under
_FORMS = "log:LOW:HIGH (LOW > 0), float:LOW:HIGH, int:LOW:HIGH or choice:A,B"


def searched(default: Any, space: str) -> Any:
    """A strategy parameter with its default and the range `clbench tune` searches by default."""
    parse_space(space, "a declared search space")  # a malformed declaration fails when its module is imported
    return dataclasses.field(default=default, metadata={SEARCH: space})


@dataclass(frozen=True)
class Space:
    """One parameter's range: log-uniform, uniform, integers, or a choice among values."""

    kind: Literal["log", "float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()

    def suggest(self, trial: Any, name: str, integer: bool = False) -> Any:
        """The trial's value for `name` (an Optuna trial's `suggest_*`); integers where the field holds them."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int" or integer:
            return trial.suggest_int(name, math.ceil(self.low), math.floor(self.high), log=self.kind == "log")
        return trial.suggest_float(name, self.low, self.high, log=self.kind == "log")

    @property
    def log_scale(self) -> bool:
        return self.kind == "log"

    def __str__(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(self.choices)
        return f"{self.kind}:{self.low:g}:{self.high:g}"


def parse_space(text: str, what: str) -> Space:
    """`log:1:1e6`, `float:0:1`, `int:16:512` or `choice:a,b` → a Space; anything else is one line naming the forms."""
    kind, _, rest = text.strip().partition(":")
    if kind == "choice":
        choices = tuple(c.strip() for c in rest.split(","))
        if not rest or not all(choices) or len(set(choices)) != len(choices):
            raise ConfigError(f"{what}={text!r} is not a list of distinct choices", "write e.g. choice:separate,online")
        return Space("choice", choices=choices)
    bounds = rest.split(":")
    try:
        low, high = (float(b) for b in bounds)
    except ValueError:
        raise ConfigError(f"{what}={text!r} is not a range", f"write {_FORMS}") from None
    if kind not in ("log", "float", "int") or not low < high or (kind == "log" and low <= 0):
        why = "its low end must be below its high end" if kind in ("log", "float", "int") else f"write {_FORMS}"
        raise ConfigError(f"{what}={text!r} is not a range", why + (" and above 0" if kind == "log" else ""))
    if kind == "int" and math.ceil(low) > math.floor(high):
        raise ConfigError(f"{what}={text!r} holds no integer", "give integer bounds, e.g. int:16:512")
    return Space(kind, low, high)  # type: ignore[arg-type]


def declared(cls: type) -> dict[str, Space]:
    """The spaces a strategy class declares on its fields."""
    return {f.name: parse_space(f.metadata[SEARCH], f.name) for f in dataclasses.fields(cls) if SEARCH in f.metadata}


def integer_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls) if hints.get(f.name) is int}


def search_space(cls: type, given: Mapping[str, str | None], noun: str) -> dict[str, Space]:
    """What `tune` searches: every declared space, or, where `--param` names some, exactly those (a bare name takes
    its declared space, `name=SPACE` overrides it). Unknown names and parameters with no space are refused."""
    fields = {f.name for f in dataclasses.fields(cls)}
    spaces = declared(cls)
    if not given:
        if not spaces:
            raise ConfigError(
                f"{noun} declares no search space for any of its parameters ({', '.join(sorted(fields)) or 'none'})",
                "name what to search: --param NAME=log:LOW:HIGH (or int:, float:, choice:)",
            )
        return spaces
    out = {}
    for name, text in given.items():
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{noun} has no parameter {name!r}{hint}", f"its parameters are: {', '.join(sorted(fields)) or 'none'}"
            )
        if text is None and name not in spaces:
            raise ConfigError(
                f"parameter {name!r} of {noun} has no search space", f"give one: --param {name}=log:LOW:HIGH"
            )
        out[name] = spaces[name] if text is None else parse_space(text, f"--param {name}")
    return out
