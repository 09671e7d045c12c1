"""Minibatches of any size train: a last minibatch of one question (k·batch + 1) must not stop a run."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from clbench.cli import main
from clbench.config import PRESETS, RunConfig
from clbench.data.inputs import FiLMInput
from clbench.model.film import FiLM, ModelConfig, SingleSampleSafeBatchNorm1d, pixel_stem, stem_output_size
from clbench.run.loop import run
from clbench.scenario.contract import load as load_scenario
from clbench.strategy.contract import instantiate, resolve

TINY = PRESETS["tiny"].model
BATCH = 79  # the tiny dataset: 80 CLEVR-Humans train questions = 79 + 1, and CLEVR capped at 238 = 3 · 79 + 1
CLEVR_TRAIN = 3 * BATCH + 1


def _batch(config: ModelConfig, batch: int, vocab: int = 20, length: int = 7) -> FiLMInput:
    images = torch.randint(0, 256, (batch, 3, config.image_height, config.image_width), dtype=torch.uint8)
    return FiLMInput(images, torch.randint(1, vocab, (batch, length)), torch.full((batch,), length))


def _classifier_norm(model: FiLM) -> SingleSampleSafeBatchNorm1d:
    return next(m for m in model.modules() if isinstance(m, SingleSampleSafeBatchNorm1d))


def _running_stats(norm: nn.BatchNorm1d) -> list[torch.Tensor]:
    return [norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()]


def _train_step(model: FiLM, batch: FiLMInput) -> None:
    model.train()
    model(batch).logsumexp(dim=1).sum().backward()


def test_one_question_trains_with_gradients_and_leaves_running_statistics_alone():
    torch.manual_seed(0)
    model = FiLM(20, 28, TINY)
    _train_step(model, _batch(TINY, 4))  # running statistics away from their initial values
    model.zero_grad()
    norm = _classifier_norm(model)
    before = _running_stats(norm)
    _train_step(model, _batch(TINY, 1))
    assert all(torch.equal(a, b) for a, b in zip(before, _running_stats(norm), strict=True))
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert norm.weight.grad.abs().sum() > 0 and model.generator.film.weight.grad.abs().sum() > 0


def test_one_sample_is_normalised_as_in_evaluation():
    torch.manual_seed(0)
    norm = SingleSampleSafeBatchNorm1d(6)
    norm(torch.randn(8, 6))
    sample = torch.randn(1, 6)
    assert torch.allclose(norm.train()(sample), norm.eval()(sample))


def test_two_questions_still_normalise_with_batch_statistics():
    torch.manual_seed(0)
    model = FiLM(20, 28, TINY)
    norm = _classifier_norm(model)
    before = _running_stats(norm)
    _train_step(model, _batch(TINY, 2))
    after = _running_stats(norm)
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    assert after[2] == before[2] + 1


def test_state_dict_keys_match_a_plain_batch_norm_so_old_checkpoints_load():
    plain = nn.BatchNorm1d(5).state_dict()
    safe = SingleSampleSafeBatchNorm1d(5)
    safe.load_state_dict(plain)
    assert list(safe.state_dict()) == list(plain)


@pytest.mark.parametrize(("height", "width", "layers"), [(24, 36, 1), (24, 36, 0), (4, 36, 2), (5, 7, 2)])
def test_stem_output_size_is_what_the_pixel_stem_gives(height: int, width: int, layers: int):
    config = replace(TINY, image_height=height, image_width=width, stem_layers=layers)
    features = pixel_stem(config).eval()(torch.zeros(1, 3, height, width))
    assert tuple(features.shape[2:]) == stem_output_size(config)


@pytest.fixture()
def one_question_last(tiny_root: Path) -> RunConfig:
    """The tiny preset with both training experiences k·batch + 1 questions long."""
    config = PRESETS["tiny"]
    return replace(
        config,
        data=replace(config.data, root=str(tiny_root), max_train_questions=CLEVR_TRAIN),
        train=replace(config.train, batch_size=BATCH, epochs=(1, 1)),
    )


@pytest.mark.parametrize("name", ["naive", "ewc"])
def test_a_last_minibatch_of_one_question_trains_to_the_end(name: str, one_question_last, tracking_store):
    strategy = instantiate(resolve(name), {})
    whole = load_scenario("clevr-humans", {"validation": 0})  # the sizes above are of whole experiences
    result = run(one_question_last, strategy, whole, tracking_uri=tracking_store, progress=False, out=io.StringIO())
    assert result.sizes["train/CLEVR"] % BATCH == 1 and result.sizes["train/CLEVR-Humans"] % BATCH == 1
    assert result.accuracy.shape == (2, 2)


@pytest.mark.parametrize(
    "options",
    [
        # one CLEVR-Humans question: a whole experience of one minibatch of one (on one image: none to hold out)
        ["--fraction", "1e-9", "--set", "scenario.validation=0"],
        ["--set", "train.batch_size=1", "--set", "data.max_train_questions=24", "--fraction", "0.1"],  # all of one
    ],
    ids=["fraction 1e-9", "batch size 1"],
)
def test_odd_but_valid_values_run_to_the_end(
    options: list[str], tiny_root, tmp_path, tracking_store, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--preset", "tiny", "--data", str(tiny_root), "--no-progress", *options]
    assert main([*argv, "--tracking-uri", tracking_store]) == 0, capsys.readouterr().err
