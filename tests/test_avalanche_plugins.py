"""Avalanche's plugins on FiLM, wrapped as a user wraps them: they run and change training where they should."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from avalanche.training import plugins
from avalanche.training.plugins import SupervisedPlugin
from mlflow import MlflowClient
from torch.optim.lr_scheduler import StepLR

from clbench import Strategy
from clbench.config import PRESETS, RunConfig
from clbench.core.errors import ConfigError
from clbench.data.inputs import FiLMInput
from clbench.model.film import FiLM
from clbench.run.loop import run
from clbench.scenario.contract import load as load_scenario
from clbench.strategy import SynapticIntelligence, aligned, distance
from clbench.strategy.applicable import REFUSED, REFUSED_ON_CPU
from clbench.strategy.contract import instantiate, plugins_of, resolve


class Losses(SupervisedPlugin):
    """The training losses, step by step, after every plugin added its term."""

    def __init__(self, into: dict[int, list[float]]) -> None:
        super().__init__()
        self.into = into

    def before_backward(self, strategy, **kwargs) -> None:
        self.into.setdefault(strategy.experience.current_experience, []).append(float(strategy.loss.detach()))


@pytest.fixture(autouse=True)
def _no_final_artifacts(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is compared is training (losses, learning rates, metrics logged as it goes): skip the final figures."""
    monkeypatch.setattr("clbench.run.loop.log_result", lambda *args, **kwargs: None)


def _config(tiny_root: Path, epochs: tuple[int, ...] = (1, 1)) -> RunConfig:
    config = PRESETS["tiny"]
    data = replace(config.data, root=str(tiny_root), max_train_questions=64, max_test_questions=32)
    return replace(config, data=data, train=replace(config.train, epochs=epochs, reuse_experience0=False))


def _losses(strategy: Strategy, config: RunConfig, store: str) -> dict[int, list[float]]:
    """The run's training losses by experience, the strategy's plugins wrapped as the run builds them."""
    losses: dict[int, list[float]] = {}

    def wrapped(model, run):
        return [*plugins_of(strategy, run), Losses(losses)]

    user = replace(strategy)
    user.plugins = wrapped  # type: ignore[method-assign]
    run(config, user, tracking_uri=store, progress=False, out=io.StringIO())
    return losses


def test_film_gives_the_features_its_answer_layer_reads():
    torch.manual_seed(0)
    model = FiLM(20, 28, PRESETS["tiny"].model).eval()
    images = torch.randint(0, 256, (3, 3, 24, 36), dtype=torch.uint8)
    inputs = FiLMInput(images, torch.randint(1, 20, (3, 5)), torch.full((3,), 5))
    features = model.get_features(inputs)
    assert features.shape == (3, PRESETS["tiny"].model.classifier_fc_dim)
    assert torch.equal(model.classifier.mlp[-1](features), model(inputs))
    assert torch.equal(model.features, features)  # where FeatureDistillationPlugin reads them


# Each plugin as a user builds it (`run` is the run's `StrategyRun`), the experience whose training it must change
# on these runs (two experiences, the second of two epochs), and whether the one before trains exactly as naive.
EFFECTIVE: dict[str, tuple[Callable[[Any], Any], int, bool]] = {
    "AGEMPlugin": (lambda run: plugins.AGEMPlugin(patterns_per_experience=32, sample_size=16), 1, True),
    "CWRStarPlugin": (lambda run: plugins.CWRStarPlugin(run.model, "classifier.mlp.4"), 0, False),
    "EWCPlugin": (lambda run: plugins.EWCPlugin(ewc_lambda=100.0), 1, True),
    "EarlyStoppingPlugin": (lambda run: plugins.EarlyStoppingPlugin(1, "valid_stream", margin=0.5), 1, True),
    "FeatureDistillationPlugin": (lambda run: plugins.FeatureDistillationPlugin(alpha=1.0), 1, True),
    "FromScratchTrainingPlugin": (lambda run: plugins.FromScratchTrainingPlugin(), 1, True),
    "GDumbPlugin": (lambda run: plugins.GDumbPlugin(mem_size=32), 0, False),
    "GEMPlugin": (lambda run: plugins.GEMPlugin(patterns_per_experience=32, memory_strength=0.5), 1, True),
    "LFLPlugin": (lambda run: plugins.LFLPlugin(lambda_e=10.0), 1, True),
    "LRSchedulerPlugin": (lambda run: plugins.LRSchedulerPlugin(StepLR(run.optimizer, 1, gamma=0.1)), 1, True),
    "LwFPlugin": (lambda run: plugins.LwFPlugin(alpha=1.0), 1, True),
    "MASPlugin": (lambda run: plugins.MASPlugin(lambda_reg=100.0), 1, True),
    "MIRPlugin": (lambda run: plugins.MIRPlugin(batch_size_mem=8, mem_size=32, subsample=16), 1, True),
    "RWalkPlugin": (lambda run: plugins.RWalkPlugin(ewc_lambda=100.0, delta_t=2), 1, False),
    "ReplayPlugin": (lambda run: plugins.ReplayPlugin(mem_size=32), 1, True),
    "clbench's SynapticIntelligence": (lambda run: SynapticIntelligence(si_lambda=1e4), 1, True),
}
REFUSED_AS_BUILT: dict[str, Callable[[Any], Any]] = {  # the refused ones, built as their documentation shows
    "BiCPlugin": lambda run: plugins.BiCPlugin(mem_size=32),
    "CoPEPlugin": lambda run: plugins.CoPEPlugin(mem_size=32),
    "CurrentDataFeCAMUpdate": lambda run: plugins.CurrentDataFeCAMUpdate(),
    "CurrentDataNCMUpdate": lambda run: plugins.CurrentDataNCMUpdate(),
    "EvaluationPlugin": lambda run: plugins.EvaluationPlugin(),
    "FeCAMOracle": lambda run: plugins.FeCAMOracle(),
    "GSS_greedyPlugin": lambda run: plugins.GSS_greedyPlugin(mem_size=32, input_size=[3, 24, 36]),
    "GenerativeReplayPlugin": lambda run: plugins.GenerativeReplayPlugin(),
    "MemoryFeCAMUpdate": lambda run: plugins.MemoryFeCAMUpdate(),
    "MemoryNCMUpdate": lambda run: plugins.MemoryNCMUpdate(),
    "NCMOracle": lambda run: plugins.NCMOracle(),
    "RARPlugin": lambda run: plugins.RARPlugin(batch_size_mem=8, mem_size=32),
    "SynapticIntelligencePlugin": lambda run: plugins.SynapticIntelligencePlugin(si_lambda=1e4),  # on CPU
    "TrainGeneratorAfterExpPlugin": lambda run: plugins.TrainGeneratorAfterExpPlugin(),
}
NOT_PLUGINS = {"SupervisedPlugin": "the base class of every plugin", "PPPloss": "CoPE's loss, a criterion"}


@dataclass
class Wrapping(Strategy):
    """A user's strategy: one of Avalanche's plugins, wrapped with no code of their own."""

    name = "wrapping"
    plugin: str = "ReplayPlugin"

    def plugins(self, model, run):
        build = EFFECTIVE[self.plugin][0] if self.plugin in EFFECTIVE else REFUSED_AS_BUILT[self.plugin]
        return [build(run)]


def _exported() -> list[str]:
    return sorted(n for n, c in vars(plugins).items() if isinstance(c, type) and not n.startswith("_"))


@pytest.fixture(scope="module")
def naive_losses(tiny_root, _empty_store, tmp_path_factory) -> dict[int, list[float]]:
    store = tmp_path_factory.mktemp("naive") / "mlflow.db"
    shutil.copyfile(_empty_store, store)
    return _losses(instantiate(resolve("naive"), {}), _config(tiny_root, (1, 2)), f"sqlite:///{store}")


@pytest.mark.parametrize("name", [*_exported(), "clbench's SynapticIntelligence"])
def test_every_avalanche_plugin_changes_training_or_is_refused(name, naive_losses, tiny_root, tracking_store):
    store = tracking_store
    config = _config(tiny_root, (1, 2))
    if name in NOT_PLUGINS:
        assert name == "SupervisedPlugin" or not issubclass(getattr(plugins, name), SupervisedPlugin)
        return
    assert name in EFFECTIVE or name in REFUSED_AS_BUILT, f"{name} is new in Avalanche: try it on FiLM and classify it"
    if name in REFUSED_ON_CPU and torch.cuda.is_available():
        pytest.skip("refused on CPU, where its snapshots alias the weights; these runs would use the GPU")
    if name in REFUSED_AS_BUILT:
        assert name in REFUSED or name in REFUSED_ON_CPU
        with pytest.raises(ConfigError, match=f"Avalanche's {name} cannot run here") as refused:
            _losses(Wrapping(name), config, store)
        assert "\n" not in str(refused.value) and refused.value.fix
        client = MlflowClient(store)
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])  # before any run
        return
    _, acts_in, idle_before = EFFECTIVE[name]
    losses = _losses(Wrapping(name), config, store)
    assert losses[acts_in] != naive_losses[acts_in]
    if idle_before:
        assert losses[acts_in - 1] == naive_losses[acts_in - 1]  # the loop is not disturbed before it acts


GROWN: set[str] = set()  # parameters an L2-SP anchor met grown


class L2SP(SupervisedPlugin):
    """A user's L2-SP: the distance to the weights the previous experience ended with, across a grown vocabulary."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.strength, self.anchor = strength, None

    def before_backward(self, strategy, **kwargs) -> None:
        if self.anchor is not None:
            strategy.loss += self.strength * distance(self.anchor, strategy.model)
            GROWN.update(n for n, p in strategy.model.named_parameters() if p.shape != self.anchor[n].shape)

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.anchor = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}


@dataclass
class UserL2SP(Strategy):
    name = "user-l2sp"
    state = "boundaries"
    strength: float = 1.0

    def plugins(self, model):
        return [L2SP(self.strength)]


def test_an_l2sp_plugin_runs_across_a_grown_vocabulary(tiny_root, tracking_store):
    config = _config(tiny_root)
    naive = _losses(instantiate(resolve("naive"), {}), config, tracking_store)
    l2sp = _losses(UserL2SP(), config, tracking_store)
    assert len(l2sp[1]) == len(naive[1]) and l2sp[1] != naive[1]
    assert "generator.embed.embedding.weight" in GROWN  # CLEVR-Humans brought new words


def test_aligned_keeps_old_rows_and_fills_grown_ones_with_todays_values():
    model = torch.nn.Embedding(5, 2)
    old = {"weight": torch.zeros(3, 2)}
    anchor = aligned(old, model)["weight"]
    assert torch.equal(anchor[:3], torch.zeros(3, 2)) and torch.equal(anchor[3:], model.weight.detach()[3:])
    with pytest.raises(ConfigError, match="does not fit"):
        aligned({"weight": torch.zeros(6, 2)}, model)


class LearningRates(SupervisedPlugin):
    """The learning rate of every training step, by experience."""

    def __init__(self, into: dict[int, list[float]]) -> None:
        super().__init__()
        self.into = into

    def before_training_iteration(self, strategy, **kwargs) -> None:
        lr = strategy.optimizer.param_groups[0]["lr"]
        self.into.setdefault(strategy.experience.current_experience, []).append(lr)


@dataclass
class StepSchedule(Strategy):
    """A user's schedule, as Avalanche's docs build one: on the run's optimiser, which `run` hands the plugins."""

    name = "user-step-schedule"
    state = "boundaries"
    gamma: float = 0.1

    def plugins(self, model, run):
        return [plugins.LRSchedulerPlugin(StepLR(run.optimizer, step_size=1, gamma=self.gamma))]


def test_a_step_schedule_steers_the_optimiser_that_trains(tiny_root, tracking_store):
    config = _config(tiny_root, (2, 2))
    lrs: dict[int, list[float]] = {}
    user = replace(StepSchedule())
    user.plugins = lambda model, run: [*StepSchedule.plugins(user, model, run), LearningRates(lrs)]  # type: ignore
    run(config, user, tracking_uri=tracking_store, progress=False, out=io.StringIO())
    lr, steps = config.train.lr_of(0), len(lrs[0]) // 2
    for experience in (0, 1):  # a tenth in the second epoch, and back at the experience's end (reset_lr)
        assert lrs[experience] == pytest.approx([lr] * steps + [lr / 10] * steps)


@dataclass
class EarlyStopped(Strategy):
    """Early stopping on the validation loss (on these tiny runs accuracy barely moves; the loss always does)."""

    name = "user-early-stopping"
    state = "within-experience"  # the best weights so far: kept across the epochs of one experience
    watch: str = "valid_stream"
    patience: int = 2

    def plugins(self, model, run):
        stop = plugins.EarlyStoppingPlugin(self.patience, self.watch, metric_name="Loss_Exp", mode="min")
        return [stop]


def _stopping_epoch(losses: list[float], planned: int, patience: int) -> int:
    """Where early stopping must stop: `losses` are the validation loss before training and after each epoch; the
    best so far is compared before each next epoch starts."""
    best, best_epoch = losses[0], 0
    for epoch in range(1, planned):
        if losses[epoch] < best:
            best, best_epoch = losses[epoch], epoch
        if epoch - best_epoch >= patience:
            return epoch
    return planned


def test_early_stopping_stops_where_the_validation_loss_says(tiny_root, tracking_store):
    planned, strategy = 8, EarlyStopped()
    result = run(
        _config(tiny_root, (1, planned)), strategy, tracking_uri=tracking_store, progress=False, out=io.StringIO()
    )
    client = MlflowClient(tracking_store)
    history = client.get_metric_history(result.run_id, "Loss_Exp/eval_phase/valid_stream/Task000/Exp001")
    losses = [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
    trained = {m.step: m.value for m in client.get_metric_history(result.run_id, "train/epochs_trained")}
    expected = _stopping_epoch(losses, planned, strategy.patience)
    assert len(losses) == expected + 1  # evaluated before training and after each epoch it trained
    assert trained.get(1, planned) == expected


def test_early_stopping_on_the_test_stream_or_without_validation_is_refused(tiny_root, tracking_store):
    config = _config(tiny_root, (1, 2))
    with pytest.raises(ConfigError, match=r"'test_stream'.*data the run is measured on"):
        run(config, EarlyStopped(watch="test_stream"), tracking_uri=tracking_store, progress=False)
    plain = load_scenario("clevr-humans", {"validation": 0})
    with pytest.raises(ConfigError, match="needs a validation stream") as refused:
        run(config, EarlyStopped(), plain, tracking_uri=tracking_store, progress=False)
    assert refused.value.fix == "run with --set scenario.validation=0.1"


def test_the_readme_says_what_becomes_of_every_plugin():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Which of Avalanche's plugins apply")[1].split("\n#")[0]
    assert [name for name in _exported() if f"`{name}`" not in section] == []
