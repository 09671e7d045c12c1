"""The strategy plugin contract, its registry, and how a strategy is found by name, file or entry point.

A strategy is a small dataclass: its fields are its parameters (CLI `--set name=value`, MLflow params), and
`plugins(model)` hands the runner Avalanche plugins. It never copies the training loop.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from clbench.errors import ConfigError

ENTRY_POINT_GROUP = "clbench.strategies"
_REGISTRY: dict[str, type[Strategy]] = {}


@dataclass
class Strategy:
    """Base class of every continual-learning strategy.

    Subclasses are dataclasses whose fields are their parameters, with defaults. Override `plugins` to add
    Avalanche plugins (EWC, replay, freezing...), and `validate` to reject bad parameter values early.
    """

    name: ClassVar[str] = ""

    def plugins(self, model: Any) -> list[Any]:
        """Avalanche plugins that implement the strategy on top of the plain training loop."""
        return []

    def validate(self) -> None:
        """Raise `ConfigError` for parameter values that cannot work."""

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc and not doc[0].startswith(cls.__name__ + "(") else ""

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """Parameter name → default value."""
        return {f.name: _default(f) for f in dataclasses.fields(cls)}

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: makes a Strategy dataclass known under `name`."""

    def decorate(cls: type[Strategy]) -> type[Strategy]:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ConfigError(f"@register({name!r}) decorates {cls!r}, not a Strategy subclass")
        cls = _as_dataclass(cls)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> dict[str, type[Strategy]]:
    """Every strategy found: registered ones plus those declared under the `clbench.strategies` entry points."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            cls = _load_entry_point(ep)
            _REGISTRY.setdefault(ep.name, cls)
            if not cls.name:
                cls.name = ep.name
    return dict(sorted(_REGISTRY.items()))


def _load_entry_point(ep: Any) -> type[Strategy]:
    try:
        obj = ep.load()
    except Exception as exc:
        raise ConfigError(
            f"strategy entry point {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}",
            "fix or uninstall the package that declares it",
        ) from None
    return _check_strategy_class(obj, ep.value)


def _check_strategy_class(obj: Any, where: str) -> type[Strategy]:
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise ConfigError(
            f"{where} is not a Strategy subclass",
            "subclass clbench.Strategy (from clbench import Strategy, register)",
        )
    return _as_dataclass(obj)


def _as_dataclass(cls: type[Strategy]) -> type[Strategy]:
    """A subclass that forgot `@dataclass` still gets its annotated fields as parameters."""
    return cls if "__dataclass_fields__" in cls.__dict__ else dataclass(cls)


def resolve(spec: str) -> type[Strategy]:
    """A registered name, `path/to/file.py:Class`, or `package.module:Class` → the strategy class."""
    if ":" in spec:
        return _load_spec(spec)
    strategies = available()
    if spec in strategies:
        return strategies[spec]
    close = difflib.get_close_matches(spec, list(strategies), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"unknown strategy {spec!r}" + (f"; {hint}" if hint else ""),
        f"choose one of {', '.join(strategies)}, or give path/to/file.py:Class",
    )


def _load_spec(spec: str) -> type[Strategy]:
    target, _, class_name = spec.rpartition(":")
    if not target or not class_name:
        raise ConfigError(f"bad strategy reference {spec!r}", "write path/to/file.py:Class or module:Class")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import strategy module {target!r}: {exc}",
                "check the module name and that its package is installed",
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"strategy module {target!r} failed to import: {type(exc).__name__}: {exc}",
                "fix the error in that module",
            ) from None
    obj = getattr(module, class_name, None)
    if obj is None:
        names = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Strategy)]
        raise ConfigError(
            f"{target} has no class {class_name!r}",
            f"use one of {', '.join(names)}" if names else "define a Strategy subclass there",
        )
    cls = _check_strategy_class(obj, spec)
    if not cls.name:
        cls.name = class_name
    return cls


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"strategy file {path} does not exist", "check the path before ':'")
    module_name = f"clbench_user_strategy_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as Python", "give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"strategy file {path} has a syntax error at line {exc.lineno}: {exc.msg}",
            "fix the file",
        ) from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(
            f"strategy file {path} failed to import: {type(exc).__name__}: {exc}", "fix the file"
        ) from None
    return module


def instantiate(cls: type[Strategy], overrides: Mapping[str, str | Any]) -> Strategy:
    """Build a strategy from its defaults and `--set` overrides (strings are parsed by the field's type)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"strategy {cls.name!r} has no parameter {key!r}{hint}",
                f"its parameters are: {', '.join(fields) or 'none'}",
            )
        values[key] = parse_value(raw, hints.get(key, str), f"{cls.name}.{key}")
    try:
        strategy = cls(**values)
    except TypeError as exc:
        raise ConfigError(f"cannot build strategy {cls.name!r}: {exc}", "check its parameters") from None
    strategy.validate()
    return strategy


def parse_value(raw: Any, kind: Any, what: str) -> Any:
    """Parse a `--set` string to the annotated type (bool, int, float, str, or Optional/Literal of them)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is typing.Literal:
        if raw not in args:
            raise ConfigError(f"{what}={raw!r} is not allowed", f"choose one of {', '.join(map(str, args))}")
        return raw
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw in (None, "none", "None", "null") and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    if not isinstance(raw, str):
        return raw
    try:
        if kind is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind in (int, float):
            return kind(raw)
    except ValueError:
        raise ConfigError(
            f"{what}={raw!r} is not a valid {kind.__name__}", f"give a {kind.__name__}, e.g. {what}=1"
        ) from None
    return raw
