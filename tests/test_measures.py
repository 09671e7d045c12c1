"""Every measure of clbench.evaluation.measures against a case computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clbench.evaluation import measures

NAMES = ["A", "B", "C"]


@pytest.fixture()
def R() -> pd.DataFrame:
    return pd.DataFrame(
        [[0.80, 0.30, 0.20], [0.60, 0.90, 0.25], [0.50, 0.70, 0.85]],
        index=pd.Index(NAMES, name="after"),
        columns=pd.Index(NAMES, name="test"),
    )


def test_average_and_learning_accuracy(R):
    assert measures.average_accuracy(R) == pytest.approx((0.50 + 0.70 + 0.85) / 3)  # the last row
    assert measures.learning_accuracy(R) == pytest.approx((0.80 + 0.90 + 0.85) / 3)  # the diagonal


def test_forgetting_takes_the_best_earlier_accuracy(R):
    # A: max(0.80, 0.60) − 0.50; B: 0.90 − 0.70; C is the last experience: nothing to forget
    assert measures.forgetting(R) == pytest.approx({"A": 0.30, "B": 0.20})


def test_backward_transfer_takes_the_accuracy_right_after_learning(R):
    assert measures.backward_transfer(R) == pytest.approx({"A": -0.30, "B": -0.20})
    R.loc["B", "A"] = 0.95  # a later peak changes forgetting, not BWT
    assert measures.forgetting(R)["A"] == pytest.approx(0.45)
    assert measures.backward_transfer(R)["A"] == pytest.approx(-0.30)


def test_normalised_forgetting_scales_by_what_was_learned_above_chance(R):
    # A: 0.30 / (0.80 − 0.30) = 0.6; B: 0.20 / (0.90 − 0.50) = 0.5
    assert measures.normalised_forgetting(R, {"A": 0.30, "B": 0.50, "C": 0.2}) == pytest.approx({"A": 0.6, "B": 0.5})
    never_above = measures.normalised_forgetting(R, {"A": 0.30, "B": 0.95, "C": 0.2})
    assert math.isnan(never_above["B"])


def test_forward_transfer_compares_with_a_model_trained_from_scratch(R):
    # B: 0.90 − 0.85; C: 0.85 − 0.90 (experience A has nothing before it)
    assert measures.forward_transfer(R, {"B": 0.85, "C": 0.90}) == pytest.approx({"B": 0.05, "C": -0.05})


def test_intransigence_compares_with_the_joint_reference(R):
    # B: 0.95 − 0.90; C: 0.88 − 0.85
    assert measures.intransigence(R, {"A": 0.82, "B": 0.95, "C": 0.88}) == pytest.approx({"B": 0.05, "C": 0.03})


def test_flip_rates_count_over_all_questions():
    before, after = np.array([1, 2, 3, 4, 0]), np.array([1, 0, 3, 0, 0])
    answers = np.array([1, 2, 0, 0, 0])
    # right before: T T F F T; right after: T F F T T → one negative flip (2nd), one positive (4th), of 5
    assert measures.flip_rates(before, after, answers) == pytest.approx((0.2, 0.2))


def test_forgetting_per_question_type():
    index = pd.MultiIndex.from_tuples(
        [("A", "A"), ("B", "A"), ("C", "A"), ("B", "B"), ("C", "B")], names=["after", "test"]
    )
    per_type = pd.DataFrame({"exist": [0.9, 0.8, 0.6, 0.5, 0.3], "count": [0.7, 0.75, 0.7, 0.4, 0.45]}, index=index)
    table = measures.type_forgetting(per_type, NAMES, NAMES)
    # A: exist max(.9, .8) − .6 = .3, count max(.7, .75) − .7 = .05; B: exist .5 − .3 = .2, count .4 − .45 = −.05
    assert table.loc["A"].to_dict() == pytest.approx({"exist": 0.3, "count": 0.05})
    assert table.loc["B"].to_dict() == pytest.approx({"exist": 0.2, "count": -0.05})


def test_the_stability_gap_and_its_recovery():
    curve = pd.Series({0: 0.80, 10: 0.50, 20: 0.60, 30: 0.70, 40: 0.72})
    assert measures.min_accuracy(curve) == 0.50
    assert measures.stability_gap(curve) == pytest.approx(0.30)  # 0.80 at the start, 0.50 at the worst
    # final 0.72: 0.60 and 0.70 are more than a point away; back at iteration 40, 30 after the dip at 10
    assert measures.recovery_iterations(curve) == 30
    flat = pd.Series({0: 0.70, 5: 0.60, 10: 0.605})
    assert measures.recovery_iterations(flat) == 0  # the low point is within a point of the end already
    assert math.isnan(measures.recovery_iterations(pd.Series({0: 0.5})))


def test_worst_case_accuracy():
    # k = 3: 0.90 / 3 + (2 / 3) · mean(0.5, 0.7) = 0.3 + 0.4
    assert measures.wc_accuracy(0.90, [0.5, 0.7]) == pytest.approx(0.70)
    assert measures.wc_accuracy(0.80, [0.5]) == pytest.approx(0.65)  # 0.8 / 2 + 0.5 / 2


def test_area_under_the_fraction_curve():
    # trapezoids: (0.4 + 0.6) / 2 · 0.4 + (0.6 + 0.7) / 2 · 0.5 = 0.525, over a span of 0.9
    assert measures.area_under_curve([1.0, 0.1, 0.5], [0.7, 0.4, 0.6]) == pytest.approx(0.525 / 0.9)
    assert math.isnan(measures.area_under_curve([1.0], [0.7]))


def test_t_interval():
    mean, half, n = measures.t_interval([1.0, 2.0, 3.0])
    # std 1, t(0.975, 2 degrees of freedom) = 4.302653
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(measures.t_interval([2.0])[1])


def test_paired_difference_and_its_test():
    result = measures.paired_difference([0.5, 0.6, 0.7], [0.4, 0.45, 0.65])
    # differences .10 .15 .05: mean .1, std .05, t = .1 / (.05 / √3) = √12; two-sided p with 2 degrees of
    # freedom: 1 − t / √(2 + t²) = 1 − √12 / √14 = 0.07418
    assert result["difference"] == pytest.approx(0.1)
    assert result["ci"] == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-6)
    assert result["p"] == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-4)
    assert not result["significant"]
    assert measures.paired_difference([0.5, 0.6, 0.7], [0.3, 0.41, 0.5])["significant"]
    missing = measures.paired_difference([0.5, float("nan"), 0.7], [0.4, 0.45, 0.65])
    assert missing["n"] == 2
