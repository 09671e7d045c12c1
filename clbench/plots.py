"""Figures shared by a run's artifacts and the sweep report.

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot: no global state, no GUI backend,
safe in worker processes and on machines without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

PARAMETER_LABELS = {"gamma": "γ (scale)", "beta": "β (shift)"}
REFERENCE = "before fine-tuning"  # the hue value drawn first, in black


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def gamma_beta(
    histograms: pd.DataFrame, hue: str, test: str | None = None, title: str = "", reference: str = REFERENCE
) -> Figure:
    """The paper's Figure 5: the distribution of every gamma and beta predicted over a test set.

    `histograms` is in `FiLMSnapshot.histogram_frame` format plus a `hue` column (one line per value, counts
    summed over everything else, e.g. seeds); only the all-blocks rows of `test` are drawn. The `reference`
    line is drawn first, in black; a line identical to it is dashed so that it stays visible.
    """
    frame = histograms[histograms["block"] == "all"]
    if test is not None and "test" in frame:
        frame = frame[frame["test"] == test]
    figure = Figure(figsize=(11, 3.8))
    axes = figure.subplots(1, 2)
    reference_density: dict[str, np.ndarray] = {}
    order = sorted(dict.fromkeys(frame[hue]), key=lambda v: v != reference)
    colours = {label: f"C{k}" for k, label in enumerate(v for v in order if v != reference)}
    for ax, parameter in zip(axes, ("gamma", "beta"), strict=True):
        part = frame[frame["parameter"] == parameter]
        for label in order:
            group = part[part[hue] == label]
            if group.empty:
                continue
            style = {"color": "black", "lw": 1.6} if label == reference else {"color": colours[label], "lw": 1.1}
            counts = group.groupby(["bin_left", "bin_right"], sort=True)["count"].sum()
            left = counts.index.get_level_values(0).to_numpy()
            width = counts.index.get_level_values(1).to_numpy() - left
            density = counts.to_numpy() / max(counts.sum(), 1) / width
            same = reference_density.get(parameter)
            if same is not None and same.shape == density.shape and np.allclose(density, same, atol=1e-9):
                style |= {"ls": "--"}
            if label == reference:
                reference_density[parameter] = density
            xs, ys = np.append(left, left[-1] + width[-1]), np.append(density, density[-1])
            ax.step(xs, ys, where="post", label=label, **style)
        ax.axvline(0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(PARAMETER_LABELS[parameter])
        ax.set_ylabel("density")
        ax.set_xlim(*_visible_range(part))
    axes[0].legend(fontsize=8, title=hue, title_fontsize=8)
    figure.suptitle(title or f"FiLM parameters predicted over {test or 'the test sets'}", fontsize=10)
    return figure


def _visible_range(part: pd.DataFrame, tail: float = 0.005) -> tuple[float, float]:
    """The span holding all but `tail` of the values at each end, so the peak at zero stays readable."""
    counts = part.groupby(["bin_left", "bin_right"], sort=True)["count"].sum()
    if counts.sum() == 0:
        return -1.0, 1.0
    share = counts.cumsum().to_numpy() / counts.sum()
    left, right = counts.index.get_level_values(0), counts.index.get_level_values(1)
    low = float(left[np.searchsorted(share, tail)])
    high = float(right[min(np.searchsorted(share, 1 - tail), len(share) - 1)])
    return min(low, -0.5), max(high, 0.5)
