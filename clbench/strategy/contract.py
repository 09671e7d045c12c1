"""The strategy plugin contract: a small dataclass that hands the runner Avalanche plugins, and says how their
state is built so that no shortcut (the experience-0 cache, `--resume`) can silently change what it does.

Its fields are its parameters (CLI `--set name=value`, MLflow params). It never copies the training loop. It
is found by name, `file.py:Class` or `module:Class` through the `clbench.strategies` entry points
(`clbench.core.registry` holds the machinery it shares with scenarios).

The shortcuts skip training that was done before: a run starts from the cached end of experience 0, or a
resumed run from the saved end of its finished experiences. Plugins keep state of their own (EWC importances,
a replay buffer, SI's path integrals), and a skipped experience must leave exactly the state a trained one
would. How that is done depends on when the plugins build their state, which each strategy declares in
`state` (see `STATE_KINDS`): replay the experience's end with zero epochs, or train it again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from clbench.core.errors import ConfigError
from clbench.core.registry import GROUPS, Plugin, PluginKind

ENTRY_POINT_GROUP = GROUPS["strategy"]

StateKind = Literal["boundaries", "within-experience", "training"]
STATE_KINDS: dict[str, str] = {
    "boundaries": "its plugins build state only at experience boundaries (before or after an experience, "
    "dataset and model adaptation), from the model, data and RNG of that moment: a finished experience is "
    "replayed from its saved end with zero epochs, experience 0 may come from the shared cache, and an "
    "interrupted experience continues from its last finished epoch",
    "within-experience": "its plugins build state at experience boundaries, and also carry some across the "
    "iterations of one experience, reset at the next boundary (an iterator cycling through a buffer): finished "
    "experiences are replayed from their ends and experience 0 may come from the cache, but an interrupted "
    "experience starts again from its beginning",
    "training": "its plugins build state during training and carry it across experiences (path integrals, "
    "running importances), which replaying an experience's end cannot rebuild: it trains experience 0 itself, "
    "and a resumed run trains its finished experiences again (their metrics are not logged twice)",
}
Shortcut = Literal["replay", "replay-ends", "retrain"]
_SHORTCUTS: dict[str | None, Shortcut] = {"boundaries": "replay", "within-experience": "replay-ends"}


@dataclass(frozen=True)
class StrategyRun:
    """What of the run a strategy's plugins may use besides the model: built before the plugins, so that a plugin
    that steers the optimiser (Avalanche's `LRSchedulerPlugin`) holds the one that trains."""

    model: Any
    optimizer: Any  # the run's torch optimiser: Adam at the first experience's learning rate
    config: Any  # the run's `clbench.config.RunConfig`
    device: Any  # torch.device
    experience_names: tuple[str, ...]
    validation: bool  # whether the scenario holds out validation sets (the only stream early stopping may watch)


@dataclass
class Strategy(Plugin):
    """Base class of every continual-learning strategy.

    Subclasses are dataclasses whose fields are their parameters, with defaults. Override `plugins` to add
    Avalanche plugins (EWC, replay, freezing...), and `validate` to reject bad parameter values early. Say
    in `state` when the plugins build their state (`STATE_KINDS`); a strategy that does not say is treated as
    `"training"`, the kind no shortcut can misrepresent.
    """

    state: ClassVar[StateKind | None] = None
    template: ClassVar[type | None] = None
    """The Avalanche template that runs the loop when no plugin can express the method (DER, ER-ACE, joint);
    None is Avalanche's SupervisedTemplate."""
    data_parallel: ClassVar[bool] = True
    """Whether torchrun may train it data-parallel: False where its plugins act on one rank's minibatch (its
    ranks would drift apart). A strategy that says True is still checked at each experience's end."""

    def plugins(self, model: Any, run: StrategyRun | None = None) -> list[Any]:
        """Avalanche plugins that implement the strategy on top of the template's training loop.

        `run` gives the run's optimiser, config, device and experience names; a strategy written as
        `plugins(self, model)` is still called with the model alone (`plugins_of`)."""
        return []

    def template_args(self) -> dict[str, Any]:
        """Keyword arguments `template` takes beyond the model, optimiser and loop settings."""
        return {}

    def experience0_identity(self) -> dict[str, Any]:
        """What makes experience 0 train differently from naive fine-tuning; runs agreeing on it share the cache.

        Empty for strategies whose plugins stay idle while the first experience trains (no penalty, an empty
        buffer, freezing from experience 1 on).
        """
        return {}

    @classmethod
    def offline(cls) -> bool:
        """Trained once on the union of all experiences, not one experience after another."""
        from avalanche.training import JointTraining

        return cls.template is not None and issubclass(cls.template, JointTraining)


def plugins_of(strategy: Strategy, run: StrategyRun) -> list[Any]:
    """The strategy's plugins, handing it the run where its `plugins` takes a `run` argument."""
    try:
        parameters = inspect.signature(strategy.plugins).parameters.values()
    except (TypeError, ValueError):  # a callable whose signature Python cannot read: the original contract
        parameters = []
    takes_run = any(p.name == "run" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return list(strategy.plugins(run.model, run=run) if takes_run else strategy.plugins(run.model))


def require(ok: bool, problem: str, fix: str) -> None:
    """For `validate`: a parameter value that cannot work is a one-line error naming the fix."""
    if not ok:
        raise ConfigError(problem, fix)


def require_non_negative(name: str, value: float, default: Any) -> None:
    require(value == value, f"{name}={value} is not a number", f"use --set {name}={default}")
    require(value >= 0, f"{name}={value} is negative", f"use --set {name}={default}")


def require_positive(name: str, value: float, default: Any) -> None:
    require(value == value, f"{name}={value} is not a number", f"use --set {name}={default}")
    require(value > 0, f"{name}={value} must be positive", f"use --set {name}={default}")


def require_buffer(mem_size: int, batch_size_mem: int | None, default: int = 1000) -> None:
    """A memory of `mem_size` questions, replayed `batch_size_mem` at a time (None: the training batch size)."""
    require_positive("mem_size", mem_size, default)
    require(
        batch_size_mem is None or 0 < batch_size_mem <= mem_size,
        f"batch_size_mem={batch_size_mem} must be between 1 and mem_size={mem_size}",
        "use --set batch_size_mem=32",
    )


def shortcut(strategy: Strategy) -> Shortcut:
    """How skipped training rebuilds the strategy's state: `replay` experience ends (and continue an interrupted
    experience from its last epoch), `replay-ends` (and start an interrupted experience again), or `retrain`."""
    return _SHORTCUTS.get(strategy.state, "retrain")


def takes_cache(strategy: Strategy) -> bool:
    """Whether the strategy may start from the shared experience-0 cache (when the run allows the cache)."""
    return shortcut(strategy) != "retrain" and not strategy.offline()


def describe_shortcut(strategy: Strategy) -> str:
    said = strategy.state or "training"
    unsaid = "" if strategy.state else " (it does not say how it builds its state, so it is treated as such)"
    return f"strategy {strategy.name} is of the {said!r} kind{unsaid}: {STATE_KINDS[said]}"


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
