"""Old parameters in today's shapes: what a plugin that remembers weights needs once the vocabulary has grown.

Each experience may bring new words, and the question embedding grows a row for each (`GrowingEmbedding`); a
snapshot taken before is then smaller than the parameter it stands for. Avalanche's `ParamData` expands its own
importances the same way; this does it for any snapshot a user's plugin keeps (an L2-SP anchor, a copy for a
penalty).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from clbench.core.errors import ConfigError


def aligned(old: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """`old` values for each of `model`'s parameters, in the parameter's current shape.

    Where a parameter grew (new embedding rows), the old values fill the leading slice and the rest is the model's
    current values, so a penalty on the distance to the snapshot does not hold back what did not exist when it was
    taken. A parameter the snapshot lacks is the model's own value; a parameter that shrank is refused.
    """
    result: dict[str, Tensor] = {}
    for name, parameter in model.named_parameters():
        current = parameter.detach()
        before = old.get(name)
        if before is None:
            result[name] = current.clone()
        elif before.shape == current.shape:
            result[name] = before.to(current)
        elif before.dim() == current.dim() and all(b <= c for b, c in zip(before.shape, current.shape, strict=True)):
            grown = current.clone()
            grown[tuple(slice(0, size) for size in before.shape)] = before.to(current)
            result[name] = grown
        else:
            raise ConfigError(
                f"the snapshot of {name} is {tuple(before.shape)}, which does not fit its shape now, "
                f"{tuple(current.shape)}",
                "take the snapshot from this model (parameters only grow, by new embedding rows)",
            )
    return result


def distance(old: Mapping[str, Tensor], model: nn.Module) -> Tensor:
    """The squared L2 distance of `model`'s parameters to the snapshot `old`, aligned: L2-SP's penalty."""
    anchors = aligned(old, model)
    terms = [((p - anchors[n]) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad]
    return torch.stack(terms).sum() if terms else torch.zeros(())
