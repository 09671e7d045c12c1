"""What a run cost: training time, peak memory, and what the strategy keeps beyond the model.

A strategy's extra memory is measured, not declared: `held_by` walks the objects its plugins (and its template,
where it brings one) hold after the last experience, and adds up what it finds. Stored samples (a replay buffer,
GEM's episodic memory, the datasets Cumulative keeps) count as questions, each at the bytes a stored question
costs (its image and its tokens); tensors and modules (EWC's importances, SI's path integrals, LwF's old model)
count as state bytes. The live model, optimiser, loggers and evaluator are the run's, not the strategy's.
No library measures this for arbitrary Avalanche plugins, so it is written here; it walks plain attributes,
containers and dataclasses to a bounded depth, each object once.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import types
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from torch import nn

from clbench.data.inputs import FiLMInput

_MAX_DEPTH = 6
_CODE = (type, types.FunctionType, types.MethodType, types.ModuleType)


@dataclass
class Held:
    """What a strategy keeps: stored questions (and their bytes), and tensors or models (state bytes)."""

    questions: int = 0
    question_bytes: int = 0
    state_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.question_bytes + self.state_bytes


_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_rss() -> None:
    """Start the peak over (Linux: writing 5 to clear_refs resets VmHWM), so that a run in a reused process, such
    as a sweep's worker, measures its own peak. Elsewhere the peak stays the process's."""
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def peak_rss_bytes() -> int:
    """The peak resident memory since `reset_peak_rss` (Linux), or the process's (elsewhere)."""
    with contextlib.suppress(OSError, ValueError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux kilobytes


def cuda_peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


@cache
def _template_attributes() -> frozenset[str]:
    """The attributes every SupervisedTemplate has: what a strategy's own template adds is the rest."""
    from avalanche.training.templates import SupervisedTemplate

    model = nn.Linear(1, 1)
    with warnings.catch_warnings():  # "no loggers specified": this template only shows which attributes it has
        warnings.simplefilter("ignore", UserWarning)
        plain = SupervisedTemplate(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), evaluator=None)
    return frozenset(vars(plain))


def held_by(template: Any, run_owned: Iterable[Any]) -> Held:
    """What the template's plugins, except the run's own, and the attributes it adds to a plain
    SupervisedTemplate hold."""
    owned = [template, template.model, template.optimizer, template.evaluator, *run_owned]
    plugins = [p for p in template.plugins if all(p is not o for o in owned)]
    roots = [*plugins, *(v for k, v in vars(template).items() if k not in _template_attributes())]
    walker = _Walker(seen={id(o) for o in owned})
    for root in roots:
        walker.visit(root, 0)
    return walker.held


@dataclass
class _Walker:
    seen: set[int]
    held: Held = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.held = Held()

    def visit(self, obj: Any, depth: int) -> None:
        if obj is None or isinstance(obj, (str, bytes, int, float, bool)) or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            self.held.state_bytes += obj.nelement() * obj.element_size()
        elif isinstance(obj, nn.Module):
            self._tensors(obj.state_dict().values())
        elif isinstance(obj, FiLMInput):
            self.held.questions += len(obj)
            self.held.question_bytes += sum(t.nelement() * t.element_size() for t in obj.tensors() if t is not None)
        elif isinstance(obj, AvalancheDataset):
            self._dataset(obj)
        elif depth < _MAX_DEPTH:
            for child in _children(obj):
                self.visit(child, depth + 1)

    def _tensors(self, tensors: Iterable[torch.Tensor]) -> None:
        for tensor in tensors:
            if id(tensor) not in self.seen:
                self.seen.add(id(tensor))
                self.held.state_bytes += tensor.nelement() * tensor.element_size()

    def _dataset(self, dataset: AvalancheDataset) -> None:
        n = len(dataset)
        self.held.questions += n
        if n:
            sample = dataset[0][0]
            per = (
                sum(t.nelement() * t.element_size() for t in sample.tensors() if t is not None)
                if isinstance(sample, FiLMInput)
                else 0
            )
            self.held.question_bytes += n * per
        # DER keeps each stored question's logits beside it, as a data attribute
        logits = getattr(dataset, "_data_attributes", {}).get("logits")
        if logits is not None and n:
            first = torch.as_tensor(logits[0])
            self.held.state_bytes += n * first.nelement() * first.element_size()


def _children(obj: Any) -> Iterable[Any]:
    if isinstance(obj, Mapping):
        return list(obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, _CODE):
        return list(vars(obj).values())
    return []
