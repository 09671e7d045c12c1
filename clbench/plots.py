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


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def gamma_beta(histograms: pd.DataFrame, hue: str, test: str | None = "CLEVR", title: str = "") -> Figure:
    """The paper's Figure 5: the distribution of every gamma and beta predicted over a test set.

    `histograms` is in `FiLMSnapshot.histogram_frame` format plus a `hue` column (one line per value, counts
    summed over everything else, e.g. seeds); only the all-blocks rows of `test` are drawn.
    """
    frame = histograms[histograms["block"] == "all"]
    if test is not None and "test" in frame:
        frame = frame[frame["test"] == test]
    figure = Figure(figsize=(11, 3.8))
    axes = figure.subplots(1, 2)
    for ax, parameter in zip(axes, ("gamma", "beta"), strict=True):
        part = frame[frame["parameter"] == parameter]
        for label, group in part.groupby(hue, sort=False):
            counts = group.groupby(["bin_left", "bin_right"], sort=True)["count"].sum()
            left = counts.index.get_level_values(0).to_numpy()
            width = counts.index.get_level_values(1).to_numpy() - left
            density = counts.to_numpy() / max(counts.sum(), 1) / width
            ax.step(np.append(left, left[-1] + width[-1]), np.append(density, density[-1]), where="post", label=label)
        ax.axvline(0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(PARAMETER_LABELS[parameter])
        ax.set_ylabel("density")
        ax.set_xlim(*_visible_range(part))
    axes[0].legend(fontsize=8, title=hue, title_fontsize=8)
    figure.suptitle(title or f"FiLM parameters predicted over {test or 'the test sets'}", fontsize=10)
    return figure


def _visible_range(part: pd.DataFrame) -> tuple[float, float]:
    """Trim empty tails so the peak at zero stays readable."""
    filled = part[part["count"] > 0]
    if filled.empty:
        return -1.0, 1.0
    low, high = float(filled["bin_left"].min()), float(filled["bin_right"].max())
    return min(low, -0.5), max(high, 0.5)
