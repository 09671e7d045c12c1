"""The validation stream, evaluated whole after each experience, beside the test stream.

Each training experience's validation set is held out of it by image (`clbench.scenario.assembly.hold_out`) and
never trained on. Its accuracy matrix gives the same measures as the test stream's, logged under
`names.VALIDATION_PREFIX`: what hyperparameters are chosen on (`clbench tune`), so the test sets stay unseen.

Not through the template's evaluator: Avalanche's forgetting and BWT metrics key their bookkeeping on the
experience index alone, so a second stream evaluated there would overwrite the test stream's. The model is read
as continual evaluation reads it (`periodic.model_accuracy`): no gradient, no RNG drawn, modes put back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from clbench.evaluation.periodic import model_accuracy


def _batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[Any, torch.Tensor]]:
    """The whole set in order, a batch at a time: no DataLoader, whose iterator would draw from the global RNG."""
    for start in range(0, len(dataset), batch_size):  # type: ignore[arg-type]
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]  # type: ignore[arg-type]
        yield tuple(default_collate(samples)[:2])  # type: ignore[misc]


class ValidationEvaluation:
    """Accuracy on every validation set (one per training experience), for a row of the validation matrix."""

    def __init__(self, sets: Sequence[tuple[str, Dataset]], batch_size: int) -> None:
        self.sets, self.batch_size = list(sets), batch_size

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.sets]

    def accuracies(self, strategy) -> list[float]:
        return [model_accuracy(strategy, _batches(dataset, self.batch_size)) for _, dataset in self.sets]
