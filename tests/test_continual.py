"""Continual evaluation watches training without changing it, and logs curves the MLflow UI plots by iteration."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from clbench.config import PRESETS, EvalConfig, RunConfig
from clbench.evaluation import names as metric_names
from clbench.run.loop import run
from clbench.strategy.contract import available


@pytest.fixture(scope="module")
def config(tiny_root: Path) -> RunConfig:
    base = PRESETS["tiny"]
    data = replace(base.data, root=str(tiny_root), max_train_questions=64, max_test_questions=48)
    train = replace(base.train, epochs=(1, 2), reuse_experience0=False)
    return replace(base, data=data, train=train)


def _run(config: RunConfig, store: str, **evaluation):
    kept = {}

    class Keep(available()["naive"]):
        def plugins(self, model):
            kept["model"] = model
            return super().plugins(model)

    result = run(
        replace(config, eval=replace(config.eval, **evaluation)),
        Keep(),
        tracking_uri=store,
        progress=False,
        out=io.StringIO(),
    )
    return result, {k: v.detach().clone() for k, v in kept["model"].state_dict().items()}


def test_watching_does_not_change_what_is_learned(config: RunConfig, tracking_store: str):
    watched, watched_weights = _run(config, tracking_store, every=1)
    plain, plain_weights = _run(config, tracking_store, every=0)
    assert watched.accuracy.equals(plain.accuracy)
    assert all(torch.equal(watched_weights[k], plain_weights[k]) for k in plain_weights)
    assert plain.curves == {} and plain.continual.empty

    # every iteration of CLEVR-Humans (4 per epoch, 2 epochs) and its start: 9 points on the CLEVR subset
    curve = watched.curves["CLEVR-Humans"]["CLEVR"]
    assert sorted(curve) == list(range(9))
    assert all(0 <= v <= 1 for v in curve.values())
    row = watched.continual.loc[("CLEVR-Humans", "CLEVR")]
    assert row["min_accuracy"] == min(curve.values())
    assert row["final"] == curve[8]

    history = MlflowClient(tracking_store).get_metric_history(
        watched.run_id, metric_names.continual("CLEVR-Humans", "CLEVR")
    )
    assert sorted((m.step, m.value) for m in history) == sorted(curve.items())
    logged = MlflowClient(tracking_store).get_run(watched.run_id).data.metrics
    assert logged[metric_names.MIN_ACC] == pytest.approx(min(curve.values()))
    new = watched.accuracy.iloc[1, 1]
    assert logged[metric_names.WC_ACC] == pytest.approx(new / 2 + min(curve.values()) / 2)


def test_the_last_iteration_is_always_measured(config: RunConfig, tracking_store: str):
    # (that the subset is fixed, the contract test shows: runs with and without shortcuts draw the same curves)
    result, _ = _run(config, tracking_store, every=3, subset=16)
    assert sorted(result.curves["CLEVR-Humans"]["CLEVR"]) == [0, 3, 6, 8]


def test_eval_settings_are_checked():
    from clbench.config import validate
    from clbench.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eval\.every=-1"):
        validate(replace(PRESETS["tiny"], eval=EvalConfig(every=-1)))
    with pytest.raises(ConfigError, match=r"eval\.subset=0"):
        validate(replace(PRESETS["tiny"], eval=EvalConfig(subset=0)))
