"""Continual evaluation: accuracy on earlier test sets *while* a later experience trains (De Lange et al. 2023).

Evaluating only at experience boundaries hides the "stability gap": old accuracy often collapses in the first
iterations of a new experience and partly recovers. This plugin measures, every `every` iterations of each
experience after the first (and at its first and last iteration), the accuracy on a fixed, seeded subset of
every earlier test set, logs it as stepped MLflow metrics (`continual_accuracy_frac/during_<experience>/<test>`,
step = the iteration within that experience) and keeps the curves for the measures (`clbench.evaluation.measures`).

Why not Avalanche's periodic evaluation (`eval_every` with `peval_mode="iteration"`): it runs the whole
evaluator, every metric included, over whole streams, which would disturb the boundary metrics (forgetting's
bookkeeping, the FiLM statistics) and cost a full test pass each time. This one reads the model only: no
gradient, no DataLoader (whose iterator draws from the global RNG), each module's train/eval mode put back,
so the run trains exactly as it would without it (a test compares the weights).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import pandas as pd
import torch
from avalanche.training.plugins import SupervisedPlugin
from torch.utils.data import default_collate

from clbench.evaluation import measures
from clbench.evaluation import names as metric_names

Curves = dict[str, dict[str, dict[int, float]]]  # during experience → test set → iteration → accuracy


class ContinualEvaluation(SupervisedPlugin):
    """Old-task accuracy every `every` iterations of every experience after the first.

    `tests` are the benchmark's test sets in experience order, as (name, dataset) pairs; experience i is
    evaluated on tests[:i]. `curves` is where the points go: the run checkpoint's own dict, so a resumed run
    keeps the points of its finished experiences and epochs. `start_at(epochs)` tells the plugin that the next
    experience continues after `epochs` finished epochs (its iterations count on from there).
    """

    def __init__(
        self,
        tests: Sequence[tuple[str, Any]],
        experience_names: Sequence[str],
        every: int,
        subset: int,
        batch_size: int,
        seed: int,
        curves: Curves,
        logger: Any,
        metric: Callable[[str, str], str] = metric_names.continual,
    ) -> None:
        super().__init__()
        self.tests, self.names = list(tests), list(experience_names)
        self.every, self.subset, self.batch_size, self.seed = every, subset, batch_size, seed
        self.curves, self.logger, self.metric = curves, logger, metric
        self._batches: dict[int, list[tuple[Any, torch.Tensor]]] = {}
        self._epochs_before = 0
        self._iteration = 0
        self._active = False
        self._at_start = False
        self.seconds = 0.0  # spent evaluating: what continual evaluation adds to training time

    def start_at(self, epochs_done: int) -> None:
        self._epochs_before = epochs_done

    # -- the fixed subsets, gathered once without touching any RNG but their own
    def _subset(self, j: int) -> list[tuple[Any, torch.Tensor]]:
        if j not in self._batches:
            dataset = self.tests[j][1]
            generator = torch.Generator().manual_seed(self.seed * 1000 + j)
            chosen = torch.randperm(len(dataset), generator=generator)[: self.subset].sort().values.tolist()
            samples = [dataset[i] for i in chosen]
            self._batches[j] = [
                tuple(default_collate(samples[k : k + self.batch_size])[:2])
                for k in range(0, len(samples), self.batch_size)
            ]
        return self._batches[j]

    def _accuracy(self, strategy, j: int) -> float:
        return model_accuracy(strategy, self._subset(j))

    def _measure(self, strategy) -> None:
        started = time.perf_counter()
        during = self.names[strategy.experience.current_experience]
        for j in range(strategy.experience.current_experience):
            test = self.tests[j][0]
            accuracy = self._accuracy(strategy, j)
            self.curves.setdefault(during, {}).setdefault(test, {})[self._iteration] = accuracy
            self.logger.log_single_metric(self.metric(during, test), accuracy, self._iteration)
        self.seconds += time.perf_counter() - started

    # -- when
    def before_training_exp(self, strategy, **kwargs) -> None:
        i = strategy.experience.current_experience
        self._active = self.every > 0 and 0 < i < len(self.names) and strategy.train_epochs > 0
        self._at_start = self._active and self._epochs_before == 0
        if self._at_start:
            self.curves.pop(self.names[i], None)  # trained again from its start: its curve is drawn again

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if self._active and self._epochs_before:  # a resumed experience: count on from its finished epochs
            self._iteration = self._epochs_before * len(strategy.dataloader)
            self._epochs_before = 0

    def before_training_iteration(self, strategy, **kwargs) -> None:
        if self._at_start:  # after every start-of-experience hook: the model the first step will change
            self._iteration, self._at_start = 0, False
            self._measure(strategy)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        if self._active:
            self._iteration += 1
            if self._iteration % self.every == 0:
                self._measure(strategy)

    def experience_ending(self, strategy) -> None:
        if self._active:
            during = self.names[strategy.experience.current_experience]
            if self._iteration not in self.curves.get(during, {}).get(self.tests[0][0], {}):
                self._measure(strategy)  # the last iteration, when it was not a multiple of `every`
            self._active = False
        self._epochs_before = 0


@torch.no_grad()
def model_accuracy(strategy, batches: Iterable[tuple[Any, torch.Tensor]]) -> float:
    """The template's model's accuracy on `batches`, read without changing it: no gradient, no RNG drawn, each
    module's train/eval mode put back."""
    model = strategy.model  # looked up each time: a strategy may replace the model (GDumb)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    autocast = getattr(strategy, "_autocast", nullcontext)
    correct = total = 0
    try:
        with autocast():
            for x, y in batches:
                output = model(x.to(strategy.device))
                correct += int((output.argmax(dim=1).cpu() == y).sum())
                total += len(y)
    finally:
        for module, training in modes.items():
            module.train(training)
    return correct / max(total, 1)


def curve_frame(curves: Curves) -> pd.DataFrame:
    """Long format: during, test, iteration, accuracy."""
    rows = [
        (during, test, iteration, accuracy)
        for during, per_test in curves.items()
        for test, points in per_test.items()
        for iteration, accuracy in sorted(points.items())
    ]
    return pd.DataFrame(rows, columns=["during", "test", "iteration", "accuracy"])


def summarise(curves: Curves, accuracy: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per (during experience, old test set): min accuracy, stability gap, recovery iterations; and for the
    run: min-ACC (mean over the old test sets of their lowest point since learned) and WC-ACC after the last
    experience, whose new-task accuracy is the accuracy matrix's last diagonal entry."""
    rows = {}
    lowest: dict[str, float] = {}
    for during, per_test in curves.items():
        for test, points in per_test.items():
            curve = pd.Series(points).sort_index()
            low = measures.min_accuracy(curve)
            rows[(during, test)] = {
                "min_accuracy": low,
                "stability_gap": measures.stability_gap(curve),
                "recovery_iterations": measures.recovery_iterations(curve),
                "final": float(curve.iloc[-1]),
            }
            lowest[test] = min(lowest.get(test, 1.0), low)
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        return table, {}
    table.index = pd.MultiIndex.from_tuples(table.index, names=["during", "test"])
    last = len(accuracy) - 1
    old = [lowest[test] for test in accuracy.columns[:last] if test in lowest]
    min_acc = measures.mean(old)
    wc_acc = measures.wc_accuracy(float(accuracy.iloc[last, last]), old) if old else float("nan")
    return table, {"min_acc": min_acc, "wc_acc": wc_acc}
