"""Avalanche metrics of our own: what Avalanche has no metric for.

`QuestionTypeAccuracy` splits test accuracy by the FiLM paper's question types (Avalanche's class accuracy
splits by answer, not by type). `FiLMStatistics` summarises the (gamma, beta) the generator predicts, which the
paper analyses (share of negative gammas, the peak at zero) and which fine-tuning moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue

_TYPE_METRIC = "Acc_QType"
TEST_STREAM = "test_stream"


def accuracy_key(experience: int) -> str:
    """Avalanche's name for a test experience's accuracy; our experiences carry task labels (always 0), so the
    name holds the task."""
    return f"Top1_Acc_Exp/eval_phase/{TEST_STREAM}/Task000/Exp{experience:03d}"


def type_metric_name(stream: str, experience: int, type_name: str) -> str:
    return f"{_TYPE_METRIC}/eval_phase/{stream}/Exp{experience:03d}/{type_name}"


class QuestionTypeAccuracy(PluginMetric[dict[str, float]]):
    """Accuracy per question type on each evaluated experience.

    Reads each question's type from the minibatch's input (`FiLMInput.question_types`).
    """

    def __init__(self, type_names: Sequence[str]) -> None:
        super().__init__()
        self.type_names = tuple(type_names)
        self.reset()

    def reset(self) -> None:
        self._correct = torch.zeros(len(self.type_names), dtype=torch.long)
        self._total = torch.zeros(len(self.type_names), dtype=torch.long)

    def result(self) -> dict[str, float]:
        return {
            name: self._correct[i].item() / self._total[i].item()
            for i, name in enumerate(self.type_names)
            if self._total[i] > 0
        }

    def before_eval_exp(self, strategy) -> None:
        self.reset()

    def after_eval_iteration(self, strategy) -> None:
        types = strategy.mb_x.question_types.long().cpu()
        correct = (strategy.mb_output.argmax(dim=1) == strategy.mb_y).long().cpu()
        n = len(self.type_names)
        self._total += torch.bincount(types, minlength=n)
        self._correct += torch.bincount(types, weights=correct, minlength=n).long()

    def after_eval_exp(self, strategy) -> list[MetricValue]:
        stream = strategy.experience.origin_stream.name
        stream = stream if stream.endswith("_stream") else f"{stream}_stream"  # as Avalanche names it
        experience = strategy.experience.current_experience
        step = strategy.clock.train_iterations
        return [
            MetricValue(self, type_metric_name(stream, experience, name), value, step)
            for name, value in self.result().items()
        ]

    def __str__(self) -> str:
        return _TYPE_METRIC


class Predictions(PluginMetric[dict[int, np.ndarray]]):
    """Each evaluated experience's predicted and true answers, question by question, as a [2, questions] array
    (the eval loader does not shuffle, so two evaluations of one test set pair up): what flip rates compare.
    Avalanche keeps no predictions."""

    def __init__(self) -> None:
        super().__init__()
        self._predictions: dict[int, np.ndarray] = {}
        self._parts: list[torch.Tensor] = []

    def reset(self) -> None:
        self._predictions = {}

    def result(self) -> dict[int, np.ndarray]:
        return dict(self._predictions)

    def before_eval(self, strategy) -> None:
        self.reset()

    def before_eval_exp(self, strategy) -> None:
        self._parts = []

    def after_eval_iteration(self, strategy) -> None:
        self._parts.append(torch.stack([strategy.mb_output.argmax(dim=1), strategy.mb_y]).cpu())

    def after_eval_exp(self, strategy) -> None:
        if self._parts:
            self._predictions[strategy.experience.current_experience] = torch.cat(self._parts, dim=1).numpy()
        self._parts = []

    def __str__(self) -> str:
        return "Predictions"


# --- gamma/beta: how FiLM conditions the network (the paper's Section 7.1 and Figure 5) ----------------------

NEAR_ZERO = 0.05  # |value| below this counts as "zero": the paper's sharp peak, a feature map switched off
_HISTOGRAM_RANGE = (-10.0, 10.0)  # fine-tuned generators spread gamma/beta to a std of ~4
HISTOGRAM_BINS = 400
_PARAMETERS = ("gamma", "beta")


@dataclass
class FiLMSnapshot:
    """The (gamma, beta) the generator predicted over one test experience, summarised per FiLMed block.

    Histograms and moments cover every question; `sample` keeps the first `keep` questions' raw values (the
    eval loader does not shuffle, so snapshots of one test set pair question by question for the drift).
    """

    histogram: torch.Tensor  # [2, blocks, bins] counts within _HISTOGRAM_RANGE
    outside: torch.Tensor  # [2, blocks, 2] counts below / above the range
    total: torch.Tensor  # [2, blocks, channels] sum of values
    total_sq: torch.Tensor  # [2, blocks, channels] sum of squares
    negative: torch.Tensor  # [2, blocks, channels] count of values < 0
    near_zero: torch.Tensor  # [2, blocks, channels] count of |values| < NEAR_ZERO
    count: int  # questions seen
    sample: torch.Tensor  # [2, kept questions, blocks, channels]

    @property
    def blocks(self) -> int:
        return self.total.shape[1]

    def channel_mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)  # [2, blocks, channels]

    def summary(self) -> pd.DataFrame:
        """One row per block and one for all blocks: negative share, near-zero share, mean and std."""
        rows = {}
        n = max(self.count, 1)
        for label, sel in [*((f"block{b + 1}", slice(b, b + 1)) for b in range(self.blocks)), ("all", slice(None))]:
            row = {}
            for p, name in enumerate(_PARAMETERS):
                values = self.total[p, sel].numel() * n
                mean = self.total[p, sel].sum().item() / values
                var = self.total_sq[p, sel].sum().item() / values - mean**2
                row[f"{name}_mean"] = mean
                row[f"{name}_std"] = max(var, 0.0) ** 0.5
                row[f"{name}_negative_share"] = self.negative[p, sel].sum().item() / values
                row[f"{name}_near_zero_share"] = self.near_zero[p, sel].sum().item() / values
            rows[label] = row
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("block")

    def histogram_frame(self) -> pd.DataFrame:
        """Long format: parameter, block, bin_left, bin_right, count (all blocks summed as block 'all')."""
        low, high = _HISTOGRAM_RANGE
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1).round(6)
        frames = []
        for p, name in enumerate(_PARAMETERS):
            per_block = [(f"block{b + 1}", self.histogram[p, b]) for b in range(self.blocks)]
            for label, counts in [*per_block, ("all", self.histogram[p].sum(0))]:
                frames.append(
                    pd.DataFrame(
                        {
                            "parameter": name,
                            "block": label,
                            "bin_left": edges[:-1],
                            "bin_right": edges[1:],
                            "count": counts.long().numpy(),
                        }
                    )
                )
        return pd.concat(frames, ignore_index=True)


def film_drift(before: FiLMSnapshot, after: FiLMSnapshot) -> pd.DataFrame:
    """How far fine-tuning moved (gamma, beta) on the same test questions, per FiLMed block.

    mean_abs_change: |after - before| averaged over the paired questions and channels.
    flipped: feature maps whose mean gamma changed sign. switched_off / switched_on: feature maps whose
    gamma is near zero for most questions after and not before (or the reverse), the paper's way to shut a
    feature map off.
    """
    kept = min(before.sample.shape[1], after.sample.shape[1])
    change = (after.sample[:, :kept] - before.sample[:, :kept]).abs().mean(dim=(1, 3))  # [2, blocks]
    mean_before, mean_after = before.channel_mean()[0], after.channel_mean()[0]
    off_before = before.near_zero[0] / max(before.count, 1) > 0.5
    off_after = after.near_zero[0] / max(after.count, 1) > 0.5
    flipped = (torch.sign(mean_before) * torch.sign(mean_after)) < 0
    rows = {
        f"block{b + 1}": {
            "gamma_mean_abs_change": change[0, b].item(),
            "beta_mean_abs_change": change[1, b].item(),
            "gamma_flipped": int(flipped[b].sum()),
            "gamma_switched_off": int((off_after[b] & ~off_before[b]).sum()),
            "gamma_switched_on": int((off_before[b] & ~off_after[b]).sum()),
            "channels": int(flipped.shape[1]),
        }
        for b in range(before.blocks)
    }
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("block")
    totals = frame.sum()
    totals[["gamma_mean_abs_change", "beta_mean_abs_change"]] = change.mean(dim=1).numpy()
    frame.loc["all"] = totals
    return frame


class FiLMStatistics(PluginMetric[dict[int, FiLMSnapshot]]):
    """Collects the generator's (gamma, beta) over every evaluated experience, from `model.last_film`.

    Avalanche has no metric over a model's internal activations; this one reads what the FiLM forward pass
    keeps. `result()` maps test experience → snapshot of the latest evaluation; the runner logs their
    summaries and compares snapshots before and after fine-tuning.
    """

    def __init__(self, keep: int = 5000) -> None:
        super().__init__()
        self.keep = keep
        self._snapshots: dict[int, FiLMSnapshot] = {}
        self._current: dict[str, Any] | None = None

    def reset(self) -> None:
        self._snapshots = {}

    def result(self) -> dict[int, FiLMSnapshot]:
        return dict(self._snapshots)

    def before_eval(self, strategy) -> None:
        self.reset()

    def before_eval_exp(self, strategy) -> None:
        self._current = {"parts": [], "kept": 0, "stats": None, "count": 0}

    def after_eval_iteration(self, strategy) -> None:
        film = getattr(strategy.model, "last_film", None)
        if film is None or self._current is None:
            return
        values = torch.stack(film).float().cpu()  # [2, B, blocks, channels]
        current = self._current
        if current["stats"] is None:
            _, _, blocks, channels = values.shape
            current["stats"] = {
                "histogram": torch.zeros(2, blocks, HISTOGRAM_BINS),
                "outside": torch.zeros(2, blocks, 2),
                **{k: torch.zeros(2, blocks, channels) for k in ("total", "total_sq", "negative", "near_zero")},
            }
        stats = current["stats"]
        low, high = _HISTOGRAM_RANGE
        per_block = values.permute(0, 2, 1, 3).flatten(2)  # [2, blocks, B * channels]
        bins = ((per_block - low) / (high - low) * HISTOGRAM_BINS).floor().long()
        inside = (bins >= 0) & (bins < HISTOGRAM_BINS)
        stats["histogram"].scatter_add_(2, bins.clamp(0, HISTOGRAM_BINS - 1), inside.float())
        stats["outside"][..., 0] += (per_block < low).sum(-1)
        stats["outside"][..., 1] += (per_block >= high).sum(-1)
        stats["total"] += values.sum(1)
        stats["total_sq"] += (values**2).sum(1)
        stats["negative"] += (values < 0).sum(1)
        stats["near_zero"] += (values.abs() < NEAR_ZERO).sum(1)
        current["count"] += values.shape[1]
        if current["kept"] < self.keep:
            part = values[:, : self.keep - current["kept"]]
            current["parts"].append(part)
            current["kept"] += part.shape[1]

    def after_eval_exp(self, strategy) -> None:
        current, self._current = self._current, None
        if current is None or current["stats"] is None:
            return
        self._snapshots[strategy.experience.current_experience] = FiLMSnapshot(
            **current["stats"], count=current["count"], sample=torch.cat(current["parts"], dim=1)
        )

    def __str__(self) -> str:
        return "FiLMStatistics"
