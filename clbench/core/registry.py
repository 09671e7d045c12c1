"""What strategies and scenarios share: a dataclass whose fields are its parameters, found by name, file or module.

A plugin kind (`PluginKind`) keeps a registry filled three ways, the same for built-ins and a user's code:
entry points (the built-ins use that door too), `path/to/file.py:Class`, and `package.module:Class`. Every
mistake on the way (unknown name, missing file, syntax error, wrong class, unknown parameter) is a one-line
`ConfigError` naming the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import pkgutil
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from clbench.core.errors import ConfigError


@dataclass
class Plugin:
    """Base of strategies and scenarios: dataclass fields are the parameters, each with a default."""

    name: ClassVar[str] = ""

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


P = TypeVar("P", bound=Plugin)

GROUPS = {"strategy": "clbench.strategies", "scenario": "clbench.scenarios"}  # noun → entry-point group and package
_REGISTERED = re.compile(r"""^@register\(\s*["']([^"']+)["']\s*\)""", re.MULTILINE)


def refuse_unknown_name(spec: str, noun: str, group: str | None = None, registered: typing.Iterable[str] = ()) -> None:
    """A one-line error for a bare name no plugin has (or a plugin file that is not there), answered without
    importing any plugin.

    Importing them means importing Avalanche (seconds on a small machine) before a typo is named. The names are
    the built-ins' `@register("...")` decorators read from their source, the entry points' names from the
    installed packages' metadata, and those registered in this process.
    """
    if ":" in spec:
        target = spec.rpartition(":")[0]
        if _is_path(target):
            _require_file(Path(target), noun)
        return
    group = group or GROUPS[noun]
    known = set(registered) | {ep.name for ep in entry_points(group=group)}
    package = importlib.util.find_spec(group)
    for folder in (package.submodule_search_locations or []) if package else []:
        for source in Path(folder).glob("*.py"):
            known |= set(_REGISTERED.findall(source.read_text(encoding="utf-8", errors="replace")))
    if spec not in known:
        _unknown(spec, noun, sorted(known))


def _is_path(target: str) -> bool:
    """`path/to/file.py:Class` rather than `package.module:Class`."""
    return target.endswith(".py") or "/" in target or "\\" in target


def _require_file(path: Path, noun: str) -> None:
    if not path.is_file():
        raise ConfigError(f"{noun} file {path} does not exist", "check the path before ':'")


def _unknown(spec: str, noun: str, known: list[str]) -> typing.NoReturn:
    close = difflib.get_close_matches(spec, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"unknown {noun} {spec!r}" + (f"; {hint}" if hint else ""),
        f"choose one of {', '.join(known)}, or give path/to/file.py:Class",
    )


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _as_dataclass(cls: type[P]) -> type[P]:
    """A subclass that forgot `@dataclass` still gets its annotated fields as parameters."""
    return cls if "__dataclass_fields__" in cls.__dict__ else dataclass(cls)


class PluginKind(Generic[P]):
    """One family of plugins (strategies, scenarios): its base class, entry-point group and registry."""

    def __init__(self, base: type[P], noun: str, group: str) -> None:
        self.base, self.noun, self.group = base, noun, group
        self._registry: dict[str, type[P]] = {}
        self._builtins_found = False

    def register(self, name: str) -> Callable[[type[P]], type[P]]:
        """Class decorator: makes a plugin dataclass known under `name`."""

        def decorate(cls: type[P]) -> type[P]:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise ConfigError(f"@register({name!r}) decorates {cls!r}, not a {self.base.__name__} subclass")
            cls = _as_dataclass(cls)
            cls.name = name
            self._registry[name] = cls
            return cls

        return decorate

    def available(self) -> dict[str, type[P]]:
        """Every plugin found: the built-ins (each module of the package named like the entry-point group, whose
        `@register` makes it known: adding one is adding a file), then those declared under the entry-point
        group by installed packages."""
        self._find_builtins()
        for ep in entry_points(group=self.group):
            if ep.name not in self._registry:
                cls = self._load_entry_point(ep)
                self._registry.setdefault(ep.name, cls)
                if not cls.name:
                    cls.name = ep.name
        return dict(sorted(self._registry.items()))

    def _find_builtins(self) -> None:
        if self._builtins_found:
            return
        self._builtins_found = True
        try:
            package = importlib.import_module(self.group)
        except ImportError:  # clbench run from a tree without its plugin folders installed
            return
        for module in pkgutil.iter_modules(package.__path__, f"{self.group}."):
            try:
                importlib.import_module(module.name)
            except Exception as exc:
                require_installed_package()  # a folder hiding clbench is the cause, not the module
                raise ConfigError(
                    f"built-in {self.noun} module {module.name} failed to import: {type(exc).__name__}: {exc}",
                    "fix that file",
                ) from None

    def resolve(self, spec: str) -> type[P]:
        """A registered name, `path/to/file.py:Class`, or `package.module:Class` → the plugin class."""
        if ":" in spec:
            return self._load_spec(spec)
        if not self._builtins_found:  # once they are imported, the registry itself answers, without reading sources
            refuse_unknown_name(spec, self.noun, self.group, self._registry)
        found = self.available()
        if spec not in found:  # named in a source or an entry point, yet not registered by it
            _unknown(spec, self.noun, list(found))
        return found[spec]

    def instantiate(self, cls: type[P], overrides: Mapping[str, Any], prefix: str = "") -> P:
        """Build a plugin from its defaults and `--set` overrides (strings are parsed by the field's type)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, raw in overrides.items():
            if key not in fields:
                shown = (lambda name: prefix + name) if prefix else repr
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" (did you mean {shown(close[0])}?)" if close else ""
                raise ConfigError(
                    f"{self.noun} {cls.name!r} has no parameter {shown(key)}{hint}",
                    f"its parameters are: {', '.join(prefix + f for f in fields) or 'none'}",
                )
            example = f"--set {prefix}{key}={_default(fields[key])}"
            values[key] = parse_value(raw, hints.get(key, str), f"{prefix or cls.name + '.'}{key}", example)
        try:
            plugin = cls(**values)
        except TypeError as exc:
            raise ConfigError(f"cannot build {self.noun} {cls.name!r}: {exc}", "check its parameters") from None
        plugin.validate()
        return plugin

    def _load_entry_point(self, ep: Any) -> type[P]:
        try:
            obj = ep.load()
        except Exception as exc:
            require_installed_package()
            raise ConfigError(
                f"{self.noun} entry point {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}",
                "fix or uninstall the package that declares it",
            ) from None
        return self._check_class(obj, ep.value)

    def _check_class(self, obj: Any, where: str) -> type[P]:
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            base = self.base.__name__
            raise ConfigError(
                f"{where} is not a {base} subclass", f"subclass clbench.{base} (from clbench import {base}, register)"
            )
        return _as_dataclass(obj)

    def _load_spec(self, spec: str) -> type[P]:
        target, _, class_name = spec.rpartition(":")
        if not target or not class_name:
            raise ConfigError(f"bad {self.noun} reference {spec!r}", "write path/to/file.py:Class or module:Class")
        if _is_path(target):
            module = self._import_file(Path(target))
        else:
            try:
                module = importlib.import_module(target)
            except ImportError as exc:
                raise ConfigError(
                    f"cannot import {self.noun} module {target!r}: {exc}",
                    "check the module name and that its package is installed",
                ) from None
            except Exception as exc:
                raise ConfigError(
                    f"{self.noun} module {target!r} failed to import: {type(exc).__name__}: {exc}",
                    "fix the error in that module",
                ) from None
        obj = getattr(module, class_name, None)
        if obj is None:
            names = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, self.base)]
            raise ConfigError(
                f"{target} has no class {class_name!r}",
                f"use one of {', '.join(names)}" if names else f"define a {self.base.__name__} subclass there",
            )
        cls = self._check_class(obj, spec)
        if not cls.name:
            cls.name = class_name
        return cls

    def _import_file(self, path: Path) -> types.ModuleType:
        _require_file(path, self.noun)
        module_name = f"clbench_user_{self.noun}_{path.stem}"
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
                f"{self.noun} file {path} has a syntax error at line {exc.lineno}: {exc.msg}", "fix the file"
            ) from None
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ConfigError(
                f"{self.noun} file {path} failed to import: {type(exc).__name__}: {exc}", "fix the file"
            ) from None
        return module


def require_installed_package() -> None:
    """Refuse, in one line, to run from a folder that hides the installed package.

    A folder named `clbench` on the module path (the working folder above a clone of the same name) is imported
    as a namespace package in place of the real one, and every import of `from clbench import ...` then fails
    with a message that names the wrong cause.
    """
    package = sys.modules.get("clbench")
    if package is None or getattr(package, "__file__", None) is not None:
        return
    folders = ", ".join(str(Path(p)) for p in getattr(package, "__path__", ()))
    raise ConfigError(
        f"Python imported the folder {folders} as the clbench package, hiding the installed one (a folder named "
        "clbench in the working folder, or elsewhere on the module path, takes its place)",
        "run clbench from another folder, e.g. cd into the clone, or rename that folder",
    )


def parse_value(raw: Any, kind: Any, what: str, example: str | None = None) -> Any:
    """Parse a `--set` string to the annotated type (bool, int, float, str, or Optional/Literal of them).

    `example` is how the fix shows a valid value where it came from (a YAML file rather than `--set`).
    """
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is typing.Literal:
        if raw not in args:
            raise ConfigError(f"{what}={raw!r} is not allowed", f"choose one of {', '.join(map(str, args))}")
        return raw
    if origin in (typing.Union, types.UnionType):
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
            value = kind(raw)
            if value != value:  # float("nan") parses, and then passes no check: every comparison is False
                raise ConfigError(f"{what}={raw} is not a number", f"give a number, e.g. {example or what + '=1'}")
            return value
    except ValueError:
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise ConfigError(
            f"{what}={raw!r} is not a valid {kind.__name__}",
            f"give {article} {kind.__name__}, e.g. {example or what + '=1'}",
        ) from None
    return raw
