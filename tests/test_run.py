"""End-to-end runs on the tiny generated dataset: strategies, freezing, vocabulary growth, MLflow, CLI errors."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from avalanche.training.plugins import SupervisedPlugin
from mlflow import MlflowClient

from clbench.cli import main
from clbench.config import PRESETS, RunConfig
from clbench.evaluation.metrics import accuracy_key
from clbench.run.loop import run
from clbench.strategy.contract import instantiate, resolve
from tests.test_mlflow_ui import says_its_unit


@pytest.fixture()
def tiny_config(tiny_root: Path) -> RunConfig:
    config = PRESETS["tiny"]
    return replace(config, data=replace(config.data, root=str(tiny_root)))


class Snapshots(SupervisedPlugin):
    """Copies of the model's parameters at the start and end of each training experience."""

    def __init__(self) -> None:
        super().__init__()
        self.start: dict[int, dict[str, torch.Tensor]] = {}
        self.end: dict[int, dict[str, torch.Tensor]] = {}

    @staticmethod
    def _copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.start[strategy.experience.current_experience] = self._copy(strategy.model)

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.end[strategy.experience.current_experience] = self._copy(strategy.model)


def _run_with_snapshots(name: str, config: RunConfig, store: str):
    strategy = instantiate(resolve(name), {})
    spy = Snapshots()
    plugins = strategy.plugins
    strategy.plugins = lambda model: [*plugins(model), spy]  # type: ignore[method-assign]
    result = run(config, strategy, tracking_uri=store, progress=False, out=io.StringIO())
    return result, spy


@pytest.mark.parametrize("name", ["naive", "generator-only"])  # every built-in: test_strategy_contract.py
def test_a_built_in_strategy_runs_both_experiences(name: str, tiny_config: RunConfig, tracking_store: str):
    result = run(
        tiny_config,
        instantiate(resolve(name), {}),
        tracking_uri=tracking_store,
        progress=False,
        out=io.StringIO(),
    )
    assert result.accuracy.shape == (2, 2)
    assert ((result.accuracy >= 0) & (result.accuracy <= 1)).all().all()
    assert set(result.forgetting) == {"CLEVR"}
    clevr_types = result.per_type.loc[("CLEVR", "CLEVR")]
    assert {"exist", "count", "query_attribute"} <= set(clevr_types.dropna().index)


class LearningRates(SupervisedPlugin):
    """The optimiser's learning rate and the epoch count as each training experience starts."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, int]] = []

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.seen.append((strategy.optimizer.param_groups[0]["lr"], strategy.train_epochs))


@pytest.mark.parametrize(
    ("lr", "epochs", "expected"), [((0.004, 0.02), (2, 1), [(0.004, 2), (0.02, 1)]), ((0.003,), (1,), [(0.003, 1)] * 2)]
)
def test_learning_rate_and_epochs_are_per_experience_or_one_for_all(tiny_config, tracking_store, lr, epochs, expected):
    config = replace(tiny_config, train=replace(tiny_config.train, lr=lr, epochs=epochs, reuse_experience0=False))
    strategy = instantiate(resolve("naive"), {})
    spy = LearningRates()
    strategy.plugins = lambda model: [spy]  # type: ignore[method-assign]
    run(config, strategy, tracking_uri=tracking_store, progress=False, out=io.StringIO())
    assert spy.seen == expected


def test_frozen_generator_leaves_generator_bit_identical_in_experience_1(tiny_config, tracking_store):
    _, spy = _run_with_snapshots("frozen-generator", tiny_config, tracking_store)
    before, after = spy.start[1], spy.end[1]
    generator = [k for k in before if k.startswith("generator.")]
    others = [k for k in before if not k.startswith("generator.")]
    assert generator and all(torch.equal(before[k], after[k]) for k in generator)
    assert any(not torch.equal(before[k], after[k]) for k in others)


def test_generator_only_leaves_the_filmed_network_bit_identical(tiny_config, tracking_store):
    _, spy = _run_with_snapshots("generator-only", tiny_config, tracking_store)
    before, after = spy.start[1], spy.end[1]
    network = [k for k in before if not k.startswith("generator.")]
    assert network and all(torch.equal(before[k], after[k]) for k in network)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("generator."))


def test_embedding_grows_for_new_words_and_keeps_old_rows(tiny_config, tracking_store):
    _, spy = _run_with_snapshots("naive", tiny_config, tracking_store)
    key = "generator.embed.embedding.weight"
    end_of_clevr, start_of_humans = spy.end[0][key], spy.start[1][key]
    assert start_of_humans.shape[0] > end_of_clevr.shape[0]
    assert torch.equal(start_of_humans[: end_of_clevr.shape[0]], end_of_clevr)


@pytest.mark.slow  # 9 s; the strategy contract test compares whole runs for identity, every strategy
def test_seeded_cpu_runs_are_repeatable(tiny_config, tracking_store):
    first = run(
        tiny_config,
        instantiate(resolve("ewc"), {}),
        tracking_uri=tracking_store,
        progress=False,
        out=io.StringIO(),
    )
    second = run(
        tiny_config,
        instantiate(resolve("ewc"), {}),
        tracking_uri=tracking_store,
        progress=False,
        out=io.StringIO(),
    )
    assert first.accuracy.equals(second.accuracy)


def test_mlflow_holds_params_stepped_metrics_and_artifacts(tiny_config, tracking_store, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"  # started from another folder than the store's
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run(
        tiny_config,
        instantiate(resolve("ewc"), {"ewc_lambda": "5"}),
        tracking_uri=tracking_store,
        progress=False,
        out=io.StringIO(),
    )
    client = MlflowClient(tracking_store)
    data = client.get_run(result.run_id).data
    assert data.params["strategy"] == "ewc" and data.params["strategy.ewc_lambda"] == "5.0"
    assert data.params["model.module_dim"] == str(tiny_config.model.module_dim)
    assert len(data.params["data.fingerprint"]) == 16 and "version.torch" in data.params
    history = client.get_metric_history(result.run_id, accuracy_key(0))
    assert len(history) == 2 and history[0].step < history[1].step
    assert history[-1].value == pytest.approx(result.accuracy.iloc[1, 0])
    assert data.metrics["bwt_frac"] == pytest.approx(result.bwt)
    assert [name for name in data.metrics if not says_its_unit(name)] == []  # every name says its unit
    assert "Acc_QType/eval_phase/test_stream/Exp000/count" in data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"accuracy_matrix.csv", "config.yaml", "model.pt"} <= artifacts
    assert client.get_run(result.run_id).info.status == "FINISHED"
    store = Path(tracking_store.removeprefix("sqlite:///")).parent
    assert (store / "mlruns").is_dir() and not (elsewhere / "mlruns").exists()  # the artifacts beside the store


def test_config_file_sets_fields_and_bad_yaml_names_its_line(capsys, tmp_path, monkeypatch):
    from clbench import config as cfg

    good = tmp_path / "run.yaml"
    good.write_text("train:\n  lr: 0.005\nmodel:\n  module_dim: 12\n")
    loaded = cfg.override(cfg.preset("tiny"), cfg.load_yaml(good))
    assert loaded.train.lr == (0.005,) and loaded.model.module_dim == 12
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("train: {lr: [1,\n")
    assert main(["run", "--config", "bad.yaml"]) == 2
    assert "is not valid YAML at line 2" in capsys.readouterr().err  # the whole catalogue: test_bad_input.py


@pytest.mark.slow
def test_a_compiled_model_trains_and_checkpoints_like_an_eager_one(tiny_config, tracking_store):
    compiled = replace(tiny_config, train=replace(tiny_config.train, compile=True))
    naive = instantiate(resolve("naive"), {})
    result = run(compiled, naive, tracking_uri=tracking_store, progress=False, out=io.StringIO())
    assert result.accuracy.shape == (2, 2)
    weights = MlflowClient(tracking_store).download_artifacts(result.run_id, "model.pt")
    assert not any(k.startswith("_orig_mod") for k in torch.load(weights, weights_only=True))


def test_a_config_saved_before_per_experience_rates_still_loads():
    """Checkpoints of interrupted runs hold the config as it was written: `lr` a number, plus `lr_finetune`."""
    saved = PRESETS["small"].to_dict()
    saved["train"] |= {"lr": 0.002, "lr_finetune": 0.01, "epochs": [4, 8]}
    loaded = RunConfig.from_dict(saved)
    assert loaded.train.lr == (0.002, 0.01)  # the rates it was saved with, whatever the preset's are today
    assert replace(loaded, train=replace(loaded.train, lr=PRESETS["small"].train.lr)) == PRESETS["small"]
    saved["train"]["lr_finetune"] = None
    assert RunConfig.from_dict(saved).train.lr == (0.002,)
    assert RunConfig.from_dict(PRESETS["tiny"].to_dict()) == PRESETS["tiny"]


def test_data_loader_workers_are_chosen_by_device_unless_set(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    train = PRESETS["paper"].train
    assert train.num_workers is None
    assert train.workers_on(torch.device("cpu")) == 0  # the cores are training's
    assert train.workers_on(torch.device("cuda")) == 8  # one per spare core, at most 8
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert train.workers_on(torch.device("cuda")) == 3
    assert replace(train, num_workers=2).workers_on(torch.device("cuda")) == 2
    assert replace(train, num_workers=0).workers_on(torch.device("cuda")) == 0
