"""Avalanche's plugins on FiLM, wrapped as a user wraps them: they run and change training where they should."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from avalanche.training.plugins import LFLPlugin, SupervisedPlugin

from clbench import Strategy
from clbench.config import PRESETS, RunConfig
from clbench.core.errors import ConfigError
from clbench.data.inputs import FiLMInput
from clbench.model.film import FiLM
from clbench.run.loop import run
from clbench.strategy import aligned, distance
from clbench.strategy.contract import instantiate, resolve


class Losses(SupervisedPlugin):
    """The training losses, step by step, after every plugin added its term."""

    def __init__(self, into: dict[int, list[float]]) -> None:
        super().__init__()
        self.into = into

    def before_backward(self, strategy, **kwargs) -> None:
        self.into.setdefault(strategy.experience.current_experience, []).append(float(strategy.loss.detach()))


@dataclass
class UserLFL(Strategy):
    """Less-forgetful learning as a user would add it: Avalanche's plugin, no code of their own."""

    name = "user-lfl"
    state = "boundaries"
    lambda_e: float = 10.0

    def plugins(self, model):
        return [LFLPlugin(self.lambda_e)]


def _config(tiny_root: Path) -> RunConfig:
    config = PRESETS["tiny"]
    return replace(config, data=replace(config.data, root=str(tiny_root)), train=replace(config.train, epochs=(1, 1)))


def _losses(strategy: Strategy, config: RunConfig, store: str) -> dict[int, list[float]]:
    losses: dict[int, list[float]] = {}
    plugins = strategy.plugins
    strategy = replace(strategy)
    strategy.plugins = lambda model: [*plugins(model), Losses(losses)]  # type: ignore[method-assign]
    run(config, strategy, tracking_uri=store, progress=False, out=io.StringIO())
    return losses


def test_film_gives_the_features_its_answer_layer_reads():
    torch.manual_seed(0)
    model = FiLM(20, 28, PRESETS["tiny"].model).eval()
    images = torch.randint(0, 256, (3, 3, 24, 36), dtype=torch.uint8)
    inputs = FiLMInput(images, torch.randint(1, 20, (3, 5)), torch.full((3,), 5))
    features = model.get_features(inputs)
    assert features.shape == (3, PRESETS["tiny"].model.classifier_fc_dim)
    assert torch.equal(model.classifier.mlp[-1](features), model(inputs))


def test_lfl_runs_on_film_and_pulls_the_second_experience_towards_the_first(tiny_root, tracking_store):
    config = _config(tiny_root)
    naive = _losses(instantiate(resolve("naive"), {}), config, tracking_store)
    lfl = _losses(UserLFL(), config, tracking_store)
    assert len(lfl[1]) == len(naive[1]) and lfl[1] != naive[1]  # the same steps, another loss


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
