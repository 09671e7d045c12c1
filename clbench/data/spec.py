"""CLEVR's closed world: attribute values, answers, relations and question types, shared by reader and generator."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
COLORS: tuple[str, ...] = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
SIZES: tuple[str, ...] = ("large", "small")
MATERIALS: tuple[str, ...] = ("rubber", "metal")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": COLORS,
    "shape": SHAPES,
    "material": MATERIALS,
    "size": SIZES,
}
RELATIONS: tuple[str, ...] = ("left", "right", "front", "behind")

# The 28 answers, in a fixed order: the classifier's output layer is this list, whatever a split contains.
ANSWERS: tuple[str, ...] = (
    "yes",
    "no",
    *(str(n) for n in range(11)),
    *COLORS,
    *SHAPES,
    *MATERIALS,
    *SIZES,
)

# The five question types of the FiLM paper's tables, named by the last function of a program.
QUESTION_TYPES: tuple[str, ...] = (
    "exist",
    "count",
    "compare_integer",
    "query_attribute",
    "compare_attribute",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
CLEVR_DIRNAME = "CLEVR_v1.0"
HUMANS_DIRNAME = "CLEVR-Humans"

# CLEVR-CoGenT: the same world, but cubes and cylinders each take half the colours, swapped between A and B,
# so a model trained on A meets unseen shape-colour pairs in B. A shape absent from a condition takes any colour.
COGENT_DIRNAME = "CLEVR_CoGenT_v1.0"
COGENT_SPLITS: tuple[str, ...] = ("trainA", "valA", "valB", "testA", "testB")
ALL_SPLITS: tuple[str, ...] = SPLITS + COGENT_SPLITS
TEST_SPLITS: tuple[str, ...] = ("test", "testA", "testB")  # no scenes, no answers, no programs
_PALETTE_1: tuple[str, ...] = ("gray", "blue", "brown", "yellow")
_PALETTE_2: tuple[str, ...] = ("red", "green", "purple", "cyan")
COGENT_CONDITIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "A": {"cube": _PALETTE_1, "cylinder": _PALETTE_2},
    "B": {"cube": _PALETTE_2, "cylinder": _PALETTE_1},
}


def condition_of(split: str) -> str | None:
    """The CoGenT condition a split's scenes were drawn under ("A" or "B"), or None for a CLEVR split."""
    return split[-1] if split in COGENT_SPLITS else None


def obeys(scene_objects: Iterable[Mapping[str, Any]], condition: str) -> bool:
    """Whether every object's colour is allowed for its shape under the condition."""
    palettes = COGENT_CONDITIONS[condition]
    return all(obj["color"] in palettes.get(obj["shape"], COLORS) for obj in scene_objects)
