"""Experience 0 is trained once and reused; strategies started from the cache behave as if they trained it."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from avalanche.training.plugins import EWCPlugin, ReplayPlugin
from mlflow import MlflowClient

from clbench.config import PRESETS, RunConfig
from clbench.run.loop import run
from clbench.strategy.contract import instantiate, resolve
from clbench.training import checkpoints


@pytest.fixture()
def config(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunConfig:
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "cache"))  # a cold experience-0 cache per test
    base = PRESETS["tiny"]
    return replace(base, data=replace(base.data, root=str(tiny_root)), train=replace(base.train, epochs=(2, 1)))


def _run_keeping_plugins(name: str, config: RunConfig, store: str):
    strategy = instantiate(resolve(name), {})
    made: list = []
    plugins = strategy.plugins

    def keep(model):
        made.extend(plugins(model))
        return made

    strategy.plugins = keep  # type: ignore[method-assign]
    return run(config, strategy, tracking_uri=store, progress=False, out=io.StringIO()), made


def test_cache_key_changes_with_every_input_to_experience0_and_nothing_else(config: RunConfig):
    key = checkpoints.experience0_key(config, "data-a")
    changed = [
        checkpoints.experience0_key(config, "data-b"),
        checkpoints.experience0_key(replace(config, seed=1), "data-a"),
        checkpoints.experience0_key(replace(config, model=replace(config.model, module_dim=12)), "data-a"),
        checkpoints.experience0_key(replace(config, train=replace(config.train, lr=(0.5,))), "data-a"),
        checkpoints.experience0_key(replace(config, train=replace(config.train, epochs=(3, 1))), "data-a"),
        checkpoints.experience0_key(replace(config, train=replace(config.train, batch_size=7)), "data-a"),
        checkpoints.experience0_key(replace(config, train=replace(config.train, compile=True)), "data-a"),
    ]
    resnet = replace(config, model=replace(config.model, stem="resnet101"))
    changed += [  # the ResNet's weights matter to it alone
        checkpoints.experience0_key(resnet, "data-a"),
        checkpoints.experience0_key(replace(resnet, model=replace(resnet.model, stem_weights="random")), "data-a"),
    ]
    assert len({key, *changed}) == len(changed) + 1
    unchanged = [
        checkpoints.experience0_key(replace(config, train=replace(config.train, epochs=(2, 9))), "data-a"),
        checkpoints.experience0_key(
            replace(config, train=replace(config.train, lr=(config.train.lr_of(0), 0.1))), "data-a"
        ),
        checkpoints.experience0_key(replace(config, device="cpu"), "data-a"),
        checkpoints.experience0_key(replace(config, model=replace(config.model, stem_weights="random")), "data-a"),
        checkpoints.experience0_key(replace(config, data=replace(config.data, feature_bank="device")), "data-a"),
        checkpoints.experience0_key(replace(config, train=replace(config.train, num_workers=4)), "data-a"),
    ]
    assert set(unchanged) == {key}


@pytest.mark.slow  # the default suite's test_strategy_contract.py proves the same weights and matrices for all
def test_ewc_from_the_cache_gets_the_same_importances_and_results(config, tracking_store):
    trained, trained_plugins = _run_keeping_plugins("ewc", config, tracking_store)
    reused, reused_plugins = _run_keeping_plugins("ewc", config, tracking_store)
    client = MlflowClient(tracking_store)
    assert client.get_run(trained.run_id).data.params["experience0.cached"] == "False"
    assert client.get_run(reused.run_id).data.params["experience0.cached"] == "True"
    first, second = (next(p for p in made if isinstance(p, EWCPlugin)) for made in (trained_plugins, reused_plugins))
    assert first.importances[0].keys() == second.importances[0].keys()
    for name, importance in first.importances[0].items():
        assert torch.equal(importance.data, second.importances[0][name].data), name
    assert trained.accuracy.equals(reused.accuracy)


@pytest.mark.slow  # as above
def test_replay_from_the_cache_gets_the_same_buffer(config, tracking_store):
    _, trained_plugins = _run_keeping_plugins("replay", config, tracking_store)
    _, reused_plugins = _run_keeping_plugins("replay", config, tracking_store)
    first, second = (next(p for p in made if isinstance(p, ReplayPlugin)) for made in (trained_plugins, reused_plugins))
    buffers = [p.storage_policy.buffer for p in (first, second)]
    assert len(buffers[0]) == len(buffers[1]) > 0
    assert list(buffers[0].targets) == list(buffers[1].targets)
    assert all(torch.equal(buffers[0][i][0].questions, buffers[1][i][0].questions) for i in range(len(buffers[0])))
