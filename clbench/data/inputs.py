"""The model's input as one tensor-like object, so every Avalanche method can treat a question batch as `x`.

Avalanche's strategies were written for a single input tensor: GEM and A-GEM store `x[:n].clone()` and
`torch.cat` them, MIR indexes `x[idx]`, DER and replay concatenate batches, every loader pins and moves `x`.
A FiLM input is three tensors (image, question tokens, question length). `FiLMInput` is the one adapter that
makes the three behave as one batch: indexing and slicing act on the batch dimension of all three, `size(0)`
and `len` give the batch size, and `torch.cat` / `torch.stack` (through PyTorch's `__torch_function__`
protocol for tensor-like types) join them field by field. The default collate knows it through
`default_collate_fn_map`, PyTorch's documented extension point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from torch.utils.data._utils.collate import default_collate_fn_map


@dataclass(frozen=True)
class FiLMInput:
    """A minibatch (or one sample) of inputs. Images stay uint8 until they reach the device."""

    images: Tensor  # uint8 [B, 3, H, W] (float scene maps with the scene stem)
    questions: Tensor  # int64 [B, T], padded with <NULL> = 0
    lengths: Tensor  # int64 [B]
    # int64 [B]: each question's index in the benchmark's type names. Not read by the model: it rides along
    # so that samples stay Avalanche's `(x, y, task)` triple, which DER, ER-ACE and MIR unpack, while the
    # per-type metrics still see each question's type.
    question_types: Tensor | None = None

    def tensors(self) -> Iterator[Tensor | None]:
        return (getattr(self, f.name) for f in fields(self))

    def map(self, fn: Callable[[Tensor], Tensor]) -> FiLMInput:
        """The same input with `fn` applied to each of its tensors."""
        return FiLMInput(*(None if t is None else fn(t) for t in self.tensors()))

    # -- the batch dimension
    def __len__(self) -> int:
        return self.lengths.shape[0] if self.lengths.dim() else 1

    def size(self, dim: int | None = None) -> Any:
        shape = torch.Size([len(self)])
        return shape if dim is None else shape[dim]

    @property
    def shape(self) -> torch.Size:
        return self.size()

    def __getitem__(self, index: Any) -> FiLMInput:
        return self.map(lambda t: t[index])

    # -- where it lives
    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, *args: Any, **kwargs: Any) -> FiLMInput:
        """Device moves only: the tensors keep their own dtypes (uint8 images, int64 tokens)."""
        device = next((a for a in args if isinstance(a, (torch.device, str, int))), kwargs.get("device"))
        non_blocking = bool(kwargs.get("non_blocking", False))
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def cpu(self) -> FiLMInput:
        return self.map(Tensor.cpu)

    def pin_memory(self, *args: Any) -> FiLMInput:
        return self.map(lambda t: t.pin_memory(*args))

    def clone(self) -> FiLMInput:
        return self.map(Tensor.clone)

    def detach(self) -> FiLMInput:
        return self.map(Tensor.detach)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _JOINS:
            inputs, *rest = args
            dim = kwargs.get("dim", rest[0] if rest else 0)
            if dim != 0:
                raise ValueError(f"FiLMInput joins along the batch dimension only, not dim={dim}")
            columns = ([getattr(i, f.name) for i in inputs] for f in fields(cls))
            # `is None`, not `None in column`: `in` compares each tensor with == (milliseconds a batch)
            return cls(*(None if any(t is None for t in column) else func(column) for column in columns))
        if func is torch.clone:
            return args[0].clone()
        return NotImplemented


_JOINS = (torch.cat, torch.concat, torch.stack)


def collate(batch: list[FiLMInput], *, collate_fn_map: dict | None = None) -> FiLMInput:
    """Samples to a minibatch: each field stacked."""
    return torch.stack(batch)


default_collate_fn_map[FiLMInput] = collate
