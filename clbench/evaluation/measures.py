"""Every continual-learning measure clbench reports, defined once, on plain numbers.

The runner, the sweep report and the tests all call these functions; `docs/measures.md` states the same
definitions in prose, with the papers they come from. Conventions:

- `R` is the accuracy matrix as a DataFrame: row i = after training experience i, column j = test set of
  experience j (same order), values in [0, 1]. A one-row matrix (an offline run) has nothing to forget.
- A measure with nothing to measure is NaN, never 0: "no forgetting measured" is not "no forgetting".
- Continual-evaluation curves are Series indexed by the iteration within the experience being trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

_RECOVERY_TOLERANCE = 0.01  # "recovered": within 1 accuracy point of the final value


# --- the accuracy matrix ------------------------------------------------------------------------------------


def average_accuracy(R: pd.DataFrame) -> float:
    """Mean accuracy over every test set after the last experience (the last row)."""
    return float(R.iloc[-1].mean())


def learning_accuracy(R: pd.DataFrame) -> float:
    """Mean of R[j][j]: each experience's accuracy right after training on it (Riemer et al. 2019)."""
    return float(np.mean([R.iloc[j, j] for j in range(len(R))]))


def forgetting(R: pd.DataFrame) -> dict[str, float]:
    """Per earlier test set j: its best accuracy from R[j] up to the row before the last, minus the last row's
    (Chaudhry et al. 2018). Positive: forgotten."""
    last = len(R) - 1
    return {test: float(R[test].iloc[j:last].max() - R[test].iloc[last]) for j, test in enumerate(R.columns[:last])}


def backward_transfer(R: pd.DataFrame) -> dict[str, float]:
    """Per earlier test set j: R[last][j] − R[j][j] (Lopez-Paz & Ranzato 2017). Negative: forgotten."""
    last = len(R) - 1
    return {test: float(R.iloc[last, j] - R.iloc[j, j]) for j, test in enumerate(R.columns[:last])}


def mean(values: Mapping[str, float] | Sequence[float]) -> float:
    """The mean of the values that are numbers; NaN when there are none."""
    items = list(values.values()) if isinstance(values, Mapping) else list(values)
    numbers = [v for v in items if not math.isnan(v)]
    return float(sum(numbers) / len(numbers)) if numbers else math.nan


def normalised_forgetting(R: pd.DataFrame, chance: Mapping[str, float]) -> dict[str, float]:
    """Forgetting as a share of what was learned above chance: F_j / (peak_j − chance_j), with the peak the
    forgetting's own and chance the test set's majority-answer accuracy (CLiMB, Srinivasan et al. 2022, which
    uses random chance). 1: back to chance; 0: nothing forgotten. NaN where the peak never rose above chance."""
    last = len(R) - 1
    out = {}
    for j, test in enumerate(R.columns[:last]):
        peak = float(R[test].iloc[j:last].max())
        above = peak - chance[test]
        out[test] = (peak - float(R[test].iloc[last])) / above if above > 0 else math.nan
    return out


def forward_transfer(R: pd.DataFrame, scratch: Mapping[str, float]) -> dict[str, float]:
    """Per later experience j ≥ 1: R[j][j] − S_j, with S_j the accuracy on test set j of a model trained from
    scratch on experience j alone. Positive: what came before helped (Díaz-Rodríguez et al. 2018)."""
    return {test: float(R.iloc[j, j] - scratch[test]) for j, test in enumerate(R.columns) if j >= 1 and test in scratch}


def intransigence(R: pd.DataFrame, joint: Mapping[str, float]) -> dict[str, float]:
    """Per later experience j ≥ 1: J_j − R[j][j], with J_j the joint-training reference's accuracy on test set j
    (Chaudhry et al. 2018). Positive: the strategy learns the new experience less well than it could."""
    return {test: float(joint[test] - R.iloc[j, j]) for j, test in enumerate(R.columns) if j >= 1 and test in joint}


# --- which answers changed ----------------------------------------------------------------------------------


def flip_rates(before: np.ndarray, after: np.ndarray, answers: np.ndarray) -> tuple[float, float]:
    """(negative, positive) flip rate between two models' predictions on the same questions: the share of all
    questions answered right before and wrong after, and the reverse (Yan et al. 2021)."""
    right_before, right_after = before == answers, after == answers
    n = max(len(answers), 1)
    return float((right_before & ~right_after).sum() / n), float((~right_before & right_after).sum() / n)


def type_forgetting(per_type: pd.DataFrame, rows: Sequence[str], tests: Sequence[str]) -> pd.DataFrame:
    """Forgetting per question type: for each earlier test set j and type, its best accuracy from row j (where it
    was learned) up to the row before the last, minus the last row's. `per_type` is indexed by (after, test),
    one column per type; `rows` name the accuracy matrix's rows, `tests` its columns. Rows of the result: test
    set; columns: type."""
    if per_type.empty or len(rows) < 2:
        return pd.DataFrame()
    last = rows[-1]
    out = {}
    for j, test in enumerate(tests[: len(rows) - 1]):
        earlier = [(after, test) for after in rows[j:-1] if (after, test) in per_type.index]
        if earlier and (last, test) in per_type.index:
            out[test] = per_type.loc[earlier].max() - per_type.loc[(last, test)]
    return pd.DataFrame(out).T.rename_axis("test") if out else pd.DataFrame()


# --- during an experience: continual evaluation (De Lange et al. 2023) --------------------------------------


def min_accuracy(curve: pd.Series) -> float:
    """The lowest accuracy an old test set fell to while a later experience trained."""
    return float(curve.min())


def stability_gap(curve: pd.Series) -> float:
    """How far the old accuracy dropped below where the experience started: first point − minimum (≥ 0)."""
    return float(curve.iloc[0] - curve.min())


def recovery_iterations(curve: pd.Series, tolerance: float = _RECOVERY_TOLERANCE) -> float:
    """Iterations from the minimum until the old accuracy is first back within `tolerance` of its final value
    (0 when the minimum already is). NaN for a curve of one point."""
    if len(curve) < 2:
        return math.nan
    final = curve.iloc[-1]
    lowest = int(np.argmin(curve.to_numpy()))
    after = curve.iloc[lowest:]
    back = after[(after - final).abs() <= tolerance + 1e-12]
    return float(back.index[0] - curve.index[lowest])


def wc_accuracy(new_accuracy: float, old_minima: Sequence[float]) -> float:
    """Worst-case accuracy after experience k (k = len(old_minima) + 1): (1/k)·A_k + (1 − 1/k)·min-ACC, with A_k
    the new experience's accuracy and min-ACC the mean over the old test sets of their lowest accuracy since
    they were learned (De Lange et al. 2023)."""
    if not old_minima:
        return new_accuracy
    k = len(old_minima) + 1
    return new_accuracy / k + (1 - 1 / k) * float(np.mean(old_minima))


# --- across a fraction axis ---------------------------------------------------------------------------------


def area_under_curve(fractions: Sequence[float], accuracies: Sequence[float]) -> float:
    """The area under accuracy against the fraction of data used, by the trapezoid rule, divided by the span of
    fractions: the mean accuracy over that span (in accuracy units). NaN for fewer than two fractions."""
    order = np.argsort(fractions)
    x, y = np.asarray(fractions, float)[order], np.asarray(accuracies, float)[order]
    if len(x) < 2 or x[-1] == x[0]:
        return math.nan
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


# --- across seeds -------------------------------------------------------------------------------------------


def t_half_width(std: Any, n: Any, confidence: float = 0.95) -> Any:
    """Half-width of the t-distribution confidence interval of a mean of n values with sample std `std`
    (elementwise over arrays or Series; NaN where n < 2)."""
    from scipy import stats

    n = np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = stats.t.ppf(0.5 + confidence / 2, np.where(n >= 2, n - 1, np.nan))
        half = t * np.asarray(std, float) / np.sqrt(n)
    return half if half.ndim else float(half)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the t-distribution confidence interval, n) over the values that are numbers; the
    half-width is NaN below two values."""
    x = np.asarray([v for v in values if not math.isnan(v)], float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    return float(x.mean()), t_half_width(x.std(ddof=1), n, confidence), n


PAIRED_TEST = "paired t-test across seeds (two-sided, α = 0.05)"


def paired_difference(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict[str, float]:
    """a − b over seeds paired by position: mean difference, its 95 % t-interval half-width, the paired t-test's
    p-value, n, and whether p < alpha (`PAIRED_TEST`). Pairs with a missing value are left out."""
    from scipy import stats

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    diffs = [x - y for x, y in pairs]
    mean_diff, half, n = t_interval(diffs)
    p = math.nan
    if n >= 2:
        if np.allclose(diffs, diffs[0]):  # no spread: the test is undefined; a constant non-zero shift is certain
            p = 0.0 if diffs[0] != 0 else 1.0
        else:
            p = float(stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
    return {"difference": mean_diff, "ci": half, "p": p, "n": n, "significant": bool(n >= 2 and p < alpha)}
