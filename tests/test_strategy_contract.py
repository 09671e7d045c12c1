"""No shortcut changes a strategy: for every registered strategy, and for a user's strategy that does not say how
it builds its state, a run that takes the experience-0 cache and a run interrupted mid-experience and resumed
give exactly the accuracy matrix, the final weights and the continual-evaluation curves of a run that trained
everything itself."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from avalanche.training.plugins import SupervisedPlugin
from mlflow import MlflowClient

from clbench import Strategy
from clbench.config import PRESETS, RunConfig
from clbench.run.loop import run
from clbench.run.result import RunResult
from clbench.strategy import applicable
from clbench.strategy.contract import available, instantiate, plugins_of, shortcut
from clbench.training import checkpoints
from tests.test_avalanche_plugins import EarlyStopped, StepSchedule


class CountSteps(SupervisedPlugin):
    """State built during training and kept across experiences, as SI's path integrals are; it also changes the
    model, so a run that skipped training steps ends with other weights."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self.steps += 1

    def after_training_exp(self, strategy, **kwargs) -> None:
        with torch.no_grad():
            for parameter in strategy.model.parameters():
                parameter.mul_(1 - 1e-3 * self.steps)


@dataclass
class UnsaidCounting(Strategy):
    """A user's strategy that does not declare `state`."""

    name = "unsaid-counting"

    def plugins(self, model):
        return [CountSteps()]


class StopAt(SupervisedPlugin):
    """Ctrl-C after the first epoch of `experience`, once its checkpoint is written."""

    def __init__(self, experience: int) -> None:
        super().__init__()
        self.experience = experience

    def before_training_epoch(self, strategy, **kwargs) -> None:  # the first epoch's checkpoint is written by now
        if strategy.experience.current_experience == self.experience and strategy.clock.train_exp_epochs >= 1:
            raise KeyboardInterrupt


class KeepModel(SupervisedPlugin):
    """The model the run ends with (GDumb replaces the model object at every experience)."""

    def __init__(self, kept: dict) -> None:
        super().__init__()
        self.kept = kept

    def after_eval(self, strategy, **kwargs) -> None:
        self.kept["model"] = strategy.model


def _run(strategy: Strategy, config: RunConfig, store: str, *, stop: bool = False, resume=None):
    """A run, keeping its model (and the plugins the strategy made) to compare; `stop` interrupts it."""
    kept: dict = {}
    original = replace(strategy)

    def watch(model, run):
        kept["plugins"] = plugins_of(original, run)
        # an offline strategy trains once, as experience 0
        return [*kept["plugins"], KeepModel(kept), *([StopAt(0 if strategy.offline() else 1)] if stop else [])]

    strategy = replace(strategy)  # a copy, so the wrapper stays on this run's instance
    strategy.plugins = watch  # type: ignore[method-assign]
    result = run(config, strategy, tracking_uri=store, progress=False, out=io.StringIO(), resume=resume)
    return result, kept


def _weights(kept: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in kept["model"].state_dict().items()}


def _assert_same(a: tuple[RunResult, dict], b: tuple[RunResult, dict], what: str) -> None:
    assert a[0].accuracy.equals(b[0].accuracy), f"{what}: accuracy matrices differ"
    wa, wb = _weights(a[1]), _weights(b[1])
    assert wa.keys() == wb.keys()
    differing = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differing, f"{what}: weights differ in {differing[:3]}"
    assert a[0].curves == b[0].curves, f"{what}: the continual-evaluation curves differ"


@pytest.fixture(scope="module")
def config(tiny_root: Path) -> RunConfig:
    """Two experiences, the second with two epochs (the interruption falls between them), on few questions."""
    base = PRESETS["tiny"]
    data = replace(base.data, root=str(tiny_root), max_train_questions=64, max_test_questions=32)
    return replace(base, data=data, train=replace(base.train, epochs=(1, 2)))


@pytest.fixture(autouse=True)
def _no_final_artifacts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property is about what training leaves (matrices, weights): skip the final figures and uploads."""
    monkeypatch.setattr("clbench.run.loop.log_result", lambda *args, **kwargs: None)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('contract') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def warm_cache(config: RunConfig, store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experience-0 cache as a sweep's first cell leaves it: written by a naive run."""
    cache = tmp_path_factory.mktemp("contract-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLBENCH_CACHE_DIR", str(cache))
        run(config, instantiate(available()["naive"], {}), tracking_uri=store, progress=False, out=io.StringIO())
    return cache


# Avalanche's RWalk divides by its largest path score, which is 0 (and its penalties NaN) until `delta_t`
# iterations have passed: the tiny runs have 4 per epoch.
TINY = {"rwalk": {"delta_t": 2}}


def _cases() -> list:
    builtins = sorted(available().items())
    return [pytest.param(instantiate(cls, TINY.get(name, {})), id=name) for name, cls in builtins] + [
        pytest.param(UnsaidCounting(), id="a user's strategy that does not say"),
        pytest.param(StepSchedule(gamma=0.5), id="a user's learning-rate schedule"),
        pytest.param(EarlyStopped(patience=1), id="a user's early stopping"),
    ]


@pytest.mark.parametrize("strategy", _cases())
def test_no_shortcut_changes_the_result(strategy: Strategy, config, store, warm_cache, monkeypatch):
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(warm_cache))
    if strategy.offline():  # trained once, with experience 0's epochs: two, so that it can be interrupted
        config = replace(config, train=replace(config.train, epochs=(2, 2)))
    cold = replace(config, train=replace(config.train, reuse_experience0=False))
    reference = _run(strategy, cold, store)

    # the cache: warmed by a naive run (as a sweep's first cell does), then by the strategy itself
    cached = _run(strategy, config, store)
    own = strategy.experience0_identity() | applicable.experience0_identity(cached[1]["plugins"])
    if own:  # a cache key of its own (a schedule's, early stopping's): the first run wrote it, the second reads it
        cached = _run(strategy, config, store)
    took_cache = MlflowClient(store).get_run(cached[0].run_id).data.params["experience0.cached"] == "True"
    assert took_cache == (shortcut(strategy) != "retrain" and not strategy.offline())
    _assert_same(reference, cached, "with the experience-0 cache")

    # interrupted in experience 1, after its first epoch, and resumed in the same MLflow run
    with pytest.raises(KeyboardInterrupt):
        _run(strategy, cold, store, stop=True)
    interrupted = checkpoints.load_run(None)  # the latest interrupted run
    resumed = _run(strategy, cold, store, resume=interrupted)
    assert resumed[0].run_id == interrupted.run_id
    _assert_same(reference, resumed, "interrupted and resumed")
    if isinstance(strategy, UnsaidCounting):  # the steps skipped by a shortcut would be missing
        assert resumed[1]["plugins"][0].steps == reference[1]["plugins"][0].steps


def test_a_strategy_that_does_not_say_is_treated_as_building_state_in_training():
    assert UnsaidCounting.state is None
    assert shortcut(UnsaidCounting()) == "retrain"


def test_every_builtin_says_how_it_builds_its_state():
    builtins = {name: cls for name, cls in available().items() if cls.__module__.startswith("clbench.strategies.")}
    assert len(builtins) >= 16
    assert not [name for name, cls in builtins.items() if cls.state is None]
