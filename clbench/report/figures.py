"""Figures shared by a run's artifacts and the sweep report.

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot: no global state, no GUI backend,
safe in worker processes and on machines without a display.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

_PARAMETER_LABELS = {"gamma": "γ (scale)", "beta": "β (shift)"}
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
        ax.set_xlabel(_PARAMETER_LABELS[parameter])
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


def accuracy_matrices(mats: dict[str, pd.DataFrame]) -> Figure:
    """One heatmap of the mean accuracy matrix per strategy (and order)."""
    count = len(mats)
    size = max(len(m) for m in mats.values())
    label_width = max(len(str(name)) for m in mats.values() for name in m.index)
    columns = min(count, 3 if label_width < 12 else 2)
    rows = -(-count // columns)
    width = 1.2 + 0.08 * label_width + 0.75 * size
    figure = Figure(figsize=(columns * width + 1, rows * (1.6 + 0.08 * label_width + 0.6 * size)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, (label, mat) in zip(axes, mats.items(), strict=False):
        image = ax.imshow(100 * mat.to_numpy(), vmin=0, vmax=100, cmap="viridis")
        for (i, j), value in np.ndenumerate(100 * mat.to_numpy()):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color="white" if value < 60 else "k")
        ax.set_xticks(range(len(mat.columns)), mat.columns, rotation=35, ha="right", fontsize=7)
        position = list(mats).index(label)
        left = list(mats.values())[position - 1] if position % columns else None
        same_rows = left is not None and list(left.index) == list(mat.index)  # labelled by its left neighbour
        ax.set_yticks(range(len(mat.index)), [] if same_rows else mat.index, fontsize=7)
        ax.set_title(textwrap.fill(label.replace(",", ", "), 48), fontsize=8)
        ax.set_xlabel("tested on", fontsize=7)
    for ax in axes[count:]:
        ax.axis("off")
    axes[0].set_ylabel("after training on", fontsize=7)
    figure.colorbar(image, ax=list(axes), shrink=0.7, label="accuracy (%)")
    figure.suptitle("Accuracy matrix, mean across seeds", fontsize=10)
    return figure


def continual_curves(
    frame: pd.DataFrame, hue: str, title: str, ylabel: str = "accuracy on the old test set (%)"
) -> Figure:
    """Old-task accuracy against the iteration of the experience that trains: one line per `hue` value.

    `frame` has columns iteration, accuracy and `hue`, and optionally low/high for a band (an interval across
    seeds). The first point of each line is where the experience started; a dip below it is the stability gap.
    """
    figure = Figure(figsize=(7.5, 4))
    ax = figure.subplots()
    for k, (label, part) in enumerate(frame.groupby(hue, sort=False)):
        part = part.sort_values("iteration")
        colour = f"C{k % 10}"
        ax.plot(part["iteration"], 100 * part["accuracy"], color=colour, lw=1.3, label=str(label))
        if {"low", "high"} <= set(part) and part["low"].notna().any():
            ax.fill_between(part["iteration"], 100 * part["low"], 100 * part["high"], color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("iteration of the experience being trained")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title=hue, title_fontsize=7)
    ax.set_title(title, fontsize=10)
    return figure
