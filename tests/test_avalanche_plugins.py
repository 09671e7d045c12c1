"""Avalanche's plugins on FiLM, wrapped as a user wraps them: they run and change training where they should."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from avalanche.training.plugins import LFLPlugin, SupervisedPlugin

from clbench import Strategy
from clbench.config import PRESETS, RunConfig
from clbench.data.inputs import FiLMInput
from clbench.model.film import FiLM
from clbench.run.loop import run
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
