"""The model's input as one object: it collates, moves with `.to(device)`, and survives Avalanche's loops."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class FiLMInput(NamedTuple):
    """A minibatch (or one sample) of inputs.

    A NamedTuple so the default collate keeps its type and Avalanche's `_unpack_minibatch`, EWC's importance
    loop and replay buffers treat it as one tensor-like `x`. Images stay uint8 until they reach the device.
    """

    images: Tensor  # uint8 [B, 3, H, W]
    questions: Tensor  # int64 [B, T], padded with <NULL> = 0
    lengths: Tensor  # int64 [B]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FiLMInput:
        return FiLMInput(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self) -> FiLMInput:
        return FiLMInput(*(t.pin_memory() for t in self))
