"""The scenario plugin contract, the twin of the strategy contract: which questions make which experience.

A scenario is a small dataclass: its fields are its parameters (`--set scenario.<field>=value`, MLflow params
`scenario.<field>`). It names its experiences before any data is read (so a wrong `--epochs` count costs one
line), says which generated world serves as its embedded default, and builds a `clbench.scenario.assembly.Benchmark`
from a dataset root. It is found by name, `file.py:Class` or `module:Class` through the `clbench.scenarios`
entry points, the same door the built-ins use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from clbench.core.errors import ConfigError
from clbench.core.registry import GROUPS, Plugin, PluginKind

if TYPE_CHECKING:  # importing clbench must stay light: the benchmark module pulls in torch and Avalanche
    from clbench.scenario.assembly import Benchmark, BuildContext

ENTRY_POINT_GROUP = GROUPS["scenario"]
DEFAULT = "clevr-humans"
PREFIX = "scenario."  # how its parameters appear in --set, --grid and MLflow params
VALIDATION = "validation"  # the parameter every scenario has: the share of each experience's images held out
DEFAULT_VALIDATION = 0.1


@dataclass
class Scenario(Plugin):
    """Base class of every scenario.

    Subclasses are dataclasses whose fields are their parameters, with defaults. They implement
    `experience_names` and `build`, and may override `validate` and `experience0_identity`. Every scenario also
    has `validation`: the share of each training experience's images whose questions are held out as that
    experience's validation set (`clbench.scenario.assembly`), so hyperparameters are never chosen on test data.
    """

    validation: float = field(default=DEFAULT_VALIDATION, kw_only=True)

    world: ClassVar[str] = "clevr"  # the generated world used when no --data is given: "clevr" or "cogent"
    # Parameters that change only later experiences: runs differing in them share the cached experience 0.
    later_only: ClassVar[tuple[str, ...]] = ()
    # Reference accuracies after the last experience (label → test name → accuracy), drawn in reports.
    references: ClassVar[dict[str, dict[str, float]]] = {}

    def experience_names(self) -> tuple[str, ...]:
        """The training experiences, in order; known before any data is read."""
        raise NotImplementedError

    def build(self, context: BuildContext) -> Benchmark:
        """Read the data under `context.root` and assemble the benchmark (see `clbench.scenario.assembly.assemble`)."""
        raise NotImplementedError

    def experience0_identity(self) -> dict[str, Any]:
        """What the first experience depends on, beside the data, model and training settings (its cache key)."""
        return {k: v for k, v in self.params().items() if k not in (*self.later_only, VALIDATION)}


_NAME = re.compile(r"^[\w\-. :/]+$")  # what MLflow allows in the metric names experiences appear in


def experience_names(scenario: Scenario) -> tuple[str, ...]:
    """The scenario's experience names, checked: at least one, distinct, and usable in MLflow metric names."""
    names = tuple(scenario.experience_names())
    if not names:
        raise ConfigError(f"scenario {scenario.name!r} has no experiences", "return at least one name")
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"scenario {scenario.name!r} names an experience {name!r}",
                "use letters, digits, spaces and _ - . : / only (MLflow metric names)",
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"scenario {scenario.name!r} repeats an experience name: {names}", "name each one once")
    return names


SCENARIOS: PluginKind[Scenario] = PluginKind(Scenario, "scenario", ENTRY_POINT_GROUP)


def register(name: str) -> Callable[[type[Scenario]], type[Scenario]]:
    """Class decorator: makes a Scenario dataclass known under `name`."""
    return SCENARIOS.register(name)


def available() -> dict[str, type[Scenario]]:
    return SCENARIOS.available()


def resolve(spec: str) -> type[Scenario]:
    return SCENARIOS.resolve(spec)


def instantiate(cls: type[Scenario], overrides: Mapping[str, Any]) -> Scenario:
    scenario = SCENARIOS.instantiate(cls, overrides, prefix=PREFIX)
    if not 0 <= scenario.validation < 1:  # not `validate`: a subclass's own need not call the base's
        raise ConfigError(
            f"{PREFIX}{VALIDATION}={scenario.validation} is outside [0, 1)",
            f"give the share of each experience's images to hold out, e.g. {PREFIX}{VALIDATION}=0.1 (0: none)",
        )
    return scenario


def load(spec: str, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """`--scenario SPEC` with its `--set scenario.X=...` values (keys without the prefix)."""
    return instantiate(resolve(spec), overrides or {})
