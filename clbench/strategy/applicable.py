"""Which of Avalanche's plugins a clbench run takes, and what the run does for the ones that steer training.

A strategy hands the run Avalanche plugins. Most of `avalanche.training.plugins` works on FiLM as it is. Two
steer the loop itself, and the run does what their documentation asks of a user's own loop: a learning-rate
scheduler's state is saved in the run checkpoints and makes experience 0 the strategy's own, and early stopping
gets the periodic evaluation of the experience's validation set it reads. Those that cannot work here (they need a
model or data FiLM on CLEVR is not) are refused in one line saying why and what to use instead, since a plugin that
runs and does nothing measures nothing. `REFUSED` is that list; the README's plugin table is drawn from it.
"""

from __future__ import annotations

from typing import Any

from avalanche.training.plugins import EarlyStoppingPlugin, LRSchedulerPlugin

from clbench.core.errors import ConfigError

VALIDATION_STREAM = "valid_stream"  # Avalanche's name for the scenario's validation stream, in metric keys

_NCM = (
    "it classifies by nearest class mean over a model's `eval_adapt` prototypes, which FiLM's answer layer is not",
    "use replay or a regularisation strategy (ewc, lwf, si)",
)
_GENERATIVE = (
    "it trains and samples a generative model (a VAE), and a question-image generator is no part of clbench",
    "use replay, which keeps real CLEVR questions",
)
REFUSED: dict[str, tuple[str, str]] = {
    "EvaluationPlugin": (
        "the run has its own evaluator (clbench's metrics and the MLflow logger)",
        "add a metric as a SupervisedPlugin among the strategy's plugins, or read the run's metrics in MLflow",
    ),
    "CurrentDataNCMUpdate": _NCM,
    "MemoryNCMUpdate": _NCM,
    "NCMOracle": _NCM,
    "CurrentDataFeCAMUpdate": _NCM,
    "MemoryFeCAMUpdate": _NCM,
    "FeCAMOracle": _NCM,
    "GenerativeReplayPlugin": _GENERATIVE,
    "TrainGeneratorAfterExpPlugin": _GENERATIVE,
    "CoPEPlugin": (
        "it is an online method: it stops each experience after `max_it_cnt` iterations, for experiences of one "
        "mini-batch (Avalanche's OnlineCLScenario), so on clbench's experiences it would train one step of each",
        "use replay or er_ace, the offline rehearsal methods",
    ),
    "BiCPlugin": (
        "it corrects a class-incremental output layer's bias from a split of each experience, which it makes by "
        "assigning `experience.dataset`, read-only in this Avalanche's experiences",
        "use replay or er_ace (er_ace answers the same bias towards new answers)",
    ),
    "GSS_greedyPlugin": (
        "its buffer holds raw inputs of one fixed `input_size`, and a FiLM input is an image with a question of "
        "any length",
        "use replay or mir (another buffer chosen by gradients)",
    ),
    "RARPlugin": (
        "it reaches an inner layer by tracing the model with torch.fx, which FiLM's forward pass defeats: it runs "
        "the question encoder only as far as the longest question",
        "use replay, or mir for rehearsal chosen by the loss",
    ),
}


def lr_schedulers(plugins: list[Any]) -> list[Any]:
    """The learning-rate schedulers the plugins step: their state is part of every checkpoint."""
    return [p.scheduler for p in plugins if isinstance(p, LRSchedulerPlugin)]


def early_stopping(plugins: list[Any]) -> EarlyStoppingPlugin | None:
    return next((p for p in plugins if isinstance(p, EarlyStoppingPlugin)), None)


REFUSED_ON_CPU: dict[str, tuple[str, str]] = {
    "SynapticIntelligencePlugin": (
        "on CPU its weight snapshots are views of the live weights, so every importance and penalty is 0 and it "
        "trains as naive fine-tuning does (`clbench.strategy.corrected`)",
        "use clbench.strategy.SynapticIntelligence, the same plugin with copied snapshots (as --strategy si does)",
    ),
}


def check(plugins: list[Any], *, validation: bool, device: Any = "cpu") -> None:
    """Refuse, in one line, a plugin that cannot work on a clbench run (on this device), or early stopping that
    would choose on test data."""
    for plugin in plugins:
        name = type(plugin).__name__
        if not type(plugin).__module__.startswith("avalanche."):  # a user's subclass, or clbench's correction
            continue
        refused = REFUSED.get(name) or (REFUSED_ON_CPU.get(name) if str(device) == "cpu" else None)
        if refused is not None:
            why, instead = refused
            raise ConfigError(f"Avalanche's {name} cannot run here: {why}", instead)
    stopper = early_stopping(plugins)
    if stopper is None:
        return
    watched = stopper.val_stream_name
    if watched not in (VALIDATION_STREAM, VALIDATION_STREAM.removesuffix("_stream")):
        raise ConfigError(
            f"EarlyStoppingPlugin watches {watched!r}: early stopping on any stream but the validation stream "
            "chooses the epoch on data the run is measured on (or trains on)",
            f"watch the validation stream: EarlyStoppingPlugin(..., val_stream_name={VALIDATION_STREAM!r})",
        )
    if not validation:
        raise ConfigError(
            "EarlyStoppingPlugin needs a validation stream, and this run's scenario holds none out",
            "run with --set scenario.validation=0.1",
        )


def experience0_identity(plugins: list[Any]) -> dict[str, Any]:
    """What of the plugins changes how experience 0 trains, beyond the strategy's own `experience0_identity`: a
    learning-rate schedule and early stopping act from the first epoch, so such a run shares no experience 0
    with naive fine-tuning (the cache, a shipped model)."""
    identity: dict[str, Any] = {}
    if schedules := [_describe(p) for p in plugins if isinstance(p, LRSchedulerPlugin)]:
        identity["lr_schedules"] = schedules
    stopper = early_stopping(plugins)
    if stopper is not None:
        identity["early_stopping"] = _describe(stopper)
    return identity


def _describe(plugin: Any) -> dict[str, Any]:
    """A plugin's plain settings, and its scheduler's where it steps one."""
    plain = (bool, int, float, str)
    settings = {k: v for k, v in vars(plugin).items() if isinstance(v, plain) and not k.startswith("_")}
    if (scheduler := getattr(plugin, "scheduler", None)) is not None:
        state = {k: v for k, v in scheduler.state_dict().items() if isinstance(v, (*plain, list))}
        settings |= {"scheduler": type(scheduler).__name__, **state}
    return {"plugin": type(plugin).__name__, **settings}
