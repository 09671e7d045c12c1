"""CLEVR's closed world: attribute values, answers, relations and question types, shared by reader and generator."""

from __future__ import annotations

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
QUESTION_TYPE_TITLES: dict[str, str] = {
    "exist": "Exist",
    "count": "Count",
    "compare_integer": "Compare Integer",
    "query_attribute": "Query Attribute",
    "compare_attribute": "Compare Attribute",
}

SPLITS: tuple[str, ...] = ("train", "val", "test")
CLEVR_DIRNAME = "CLEVR_v1.0"
HUMANS_DIRNAME = "CLEVR-Humans"
