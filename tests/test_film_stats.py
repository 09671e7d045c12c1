"""The gamma/beta statistics: shares, histograms and drift on (gamma, beta) values we choose."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from clbench.evaluation.metrics import HISTOGRAM_BINS, NEAR_ZERO, FiLMStatistics, film_drift


def _observe(gammas: torch.Tensor, betas: torch.Tensor, batch: int = 3, experience: int = 0, keep: int = 100):
    """Feed [questions, blocks, channels] values through the metric's hooks in minibatches."""
    metric = FiLMStatistics(keep=keep)
    model = SimpleNamespace(last_film=None)
    strategy = SimpleNamespace(model=model, experience=SimpleNamespace(current_experience=experience))
    metric.before_eval(strategy)
    metric.before_eval_exp(strategy)
    for start in range(0, len(gammas), batch):
        model.last_film = (gammas[start : start + batch], betas[start : start + batch])
        metric.after_eval_iteration(strategy)
    metric.after_eval_exp(strategy)
    return metric.result()[experience]


def test_shares_means_and_histogram_cover_every_value():
    gammas = torch.tensor([[[-1.01, 0.0, 2.0, 0.01]], [[-2.0, 1.0, 3.0, -0.02]]]).repeat(5, 2, 1)  # 10 q, 2 blocks
    betas = torch.zeros_like(gammas)
    gammas[:, 1] = 10.0  # block 2: everything beyond the histogram's range
    snap = _observe(gammas, betas)
    summary = snap.summary()
    assert snap.count == 10
    assert summary.loc["block1", "gamma_negative_share"] == pytest.approx(3 / 8)
    assert summary.loc["block1", "gamma_near_zero_share"] == pytest.approx(3 / 8)  # 0.0, 0.01, -0.02
    assert summary.loc["block1", "gamma_mean"] == pytest.approx(gammas[:, 0].mean().item())
    assert summary.loc["block1", "gamma_std"] == pytest.approx(gammas[:, 0].std(unbiased=False).item(), rel=1e-5)
    assert summary.loc["block2", "gamma_negative_share"] == 0
    assert summary.loc["all", "gamma_negative_share"] == pytest.approx(3 / 16)
    assert summary.loc["all", "beta_near_zero_share"] == 1.0
    assert snap.histogram[0, 0].sum() == 40 and snap.histogram[0, 1].sum() == 0
    assert snap.outside[0, 1].tolist() == [0, 40]
    frame = snap.histogram_frame()
    assert len(frame) == 2 * 3 * HISTOGRAM_BINS
    block1 = frame[(frame.parameter == "gamma") & (frame.block == "block1")]
    assert block1.loc[(block1.bin_left <= -1.01) & (block1.bin_right > -1.01), "count"].item() == 5


def test_sample_keeps_the_first_questions_in_order():
    gammas = torch.arange(7 * 2 * 3, dtype=torch.float32).view(7, 2, 3)
    snap = _observe(gammas, -gammas, batch=2, keep=5)
    assert snap.sample.shape == (2, 5, 2, 3)
    assert torch.equal(snap.sample[0], gammas[:5]) and torch.equal(snap.sample[1], -gammas[:5])


def test_drift_counts_changes_sign_flips_and_switched_off_maps():
    before = torch.ones(6, 1, 4)
    after = before.clone()
    after[:, 0, 0] = -1.0  # map 0 flips sign
    after[:, 0, 1] = 0.0  # map 1 is switched off for every question
    after[:, 0, 2] = 1.5  # map 2 just grows
    drift = film_drift(_observe(before, before), _observe(after, before))
    row = drift.loc["block1"]
    assert row["gamma_flipped"] == 1 and row["gamma_switched_off"] == 1 and row["gamma_switched_on"] == 0
    assert row["gamma_mean_abs_change"] == pytest.approx((2 + 1 + 0.5 + 0) / 4)
    assert row["beta_mean_abs_change"] == 0
    assert drift.loc["all", "channels"] == 4
    assert NEAR_ZERO > 0


def test_no_drift_between_identical_snapshots():
    values = torch.randn(9, 2, 5)
    snap = _observe(values, values)
    drift = film_drift(snap, snap)
    assert (drift[["gamma_mean_abs_change", "gamma_flipped", "gamma_switched_off"]] == 0).all().all()
