"""Cost is part of the result: every run logs its training time, peak memory and what the strategy keeps."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from clbench.config import PRESETS, RunConfig
from clbench.evaluation import names as metric_names
from clbench.model.film import count_parameters
from clbench.run.build import build_benchmark, build_model
from clbench.run.loop import run
from clbench.strategy.contract import instantiate, resolve


@pytest.fixture(scope="module")
def config(tiny_root: Path) -> RunConfig:
    base = PRESETS["tiny"]
    train = replace(base.train, reuse_experience0=False)
    return replace(base, data=replace(base.data, root=str(tiny_root)), train=train)


def _cost(name: str, sets: dict, config: RunConfig, store: str) -> dict[str, float]:
    result = run(config, instantiate(resolve(name), sets), tracking_uri=store, progress=False, out=io.StringIO())
    logged = MlflowClient(store).get_run(result.run_id).data.metrics
    assert {k: logged[k] for k in result.cost} == result.cost  # in the MLflow run as well
    assert "Cost: training" in result.summary()
    return result.cost


def test_naive_keeps_nothing_and_every_run_has_a_time_and_a_peak(config, tracking_store):
    cost = _cost("naive", {}, config, tracking_store)
    assert cost[metric_names.HELD_BYTES] == 0 and cost[metric_names.HELD_QUESTIONS] == 0
    assert cost[metric_names.TRAIN_TIME] > 0
    assert cost[metric_names.PEAK_RSS] > 100 * 2**20  # a Python process with torch loaded
    assert metric_names.CUDA_PEAK not in cost  # on CPU


def test_a_replay_buffer_is_counted_in_questions_and_their_bytes(config, tracking_store):
    cost = _cost("replay", {"mem_size": 40}, config, tracking_store)
    bench = build_benchmark(config, progress=False)
    sample = bench.train_datasets[0][0][0]
    per_question = sum(t.nelement() * t.element_size() for t in sample.tensors())
    assert cost[metric_names.HELD_QUESTIONS] == 40
    assert cost[metric_names.HELD_QUESTION_BYTES] == 40 * per_question


def test_lwf_keeps_one_old_model(config, tracking_store):
    cost = _cost("lwf", {}, config, tracking_store)
    bench = build_benchmark(config, progress=False)
    model = build_model(config, bench, torch.device("cpu"))
    # the teacher is the model as experience 0 left it: its parameters (and batch-norm buffers), in fp32
    assert cost[metric_names.HELD_STATE_BYTES] >= 4 * count_parameters(model)
    assert cost[metric_names.HELD_QUESTIONS] == 0
