"""The CLEVR executor: real-style programs on hand-built scenes, and every way a program can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clbench.core.errors import ProgramError
from clbench.data.programs import FUNCTION_NAMES, execute, function_of, question_type
from clbench.data.spec import QUESTION_TYPES

FIXTURE = Path(__file__).parent / "fixtures" / "real_clevr" / "CLEVR_v1.0"


def _scene(*objects: tuple[str, str, str, str, float, float]) -> dict:
    """A scene in CLEVR's JSON shape; relations from x (left/right) and y (front/behind), margin 0.2."""
    objs = [
        {"size": z, "color": c, "material": m, "shape": s, "3d_coords": [x, y, 0.5]} for z, c, m, s, x, y in objects
    ]
    axes = {"right": (0, 1), "left": (0, -1), "behind": (1, 1), "front": (1, -1)}
    relationships = {
        r: [[j for j, b in enumerate(objs) if j != i and sign * (b["3d_coords"][k] - a["3d_coords"][k]) > 0.2]
            for i, a in enumerate(objs)]
        for r, (k, sign) in axes.items()
    }  # fmt: skip
    return {"objects": objs, "relationships": relationships}


# 0 large gray metal cube (left, middle-back), 1 small red rubber sphere (right-ish, back),
# 2 large blue rubber cube (right, front), 3 small yellow metal cylinder (left-ish, front)
FOUR = _scene(
    ("large", "gray", "metal", "cube", -2.0, 1.5),
    ("small", "red", "rubber", "sphere", 1.5, 2.0),
    ("large", "blue", "rubber", "cube", 2.5, -2.0),
    ("small", "yellow", "metal", "cylinder", -1.0, -2.5),
)
# Identical twins (no attribute tells them apart) and one more.
TWINS = _scene(
    ("small", "green", "rubber", "sphere", -2.0, 0.0),
    ("small", "green", "rubber", "sphere", 2.0, 0.0),
    ("large", "purple", "metal", "cylinder", 0.0, 2.0),
)
# A single object.
ALONE = _scene(("large", "cyan", "metal", "sphere", 0.0, 0.0))


def program(*steps: tuple) -> list[dict]:
    """Nodes from (function, inputs[, value]) tuples, written as CLEVR v1.0 writes them."""
    return [{"inputs": list(step[1]), "function": step[0], "value_inputs": list(step[2:])} for step in steps]


def refer(start: int, **spec: str) -> list[tuple]:
    """scene → filters → unique, numbered from ``start``."""
    steps: list[tuple] = [("scene", [])]
    for attribute, value in spec.items():
        steps.append((f"filter_{attribute}", [start + len(steps) - 1], value))
    steps.append(("unique", [start + len(steps) - 1]))
    return steps


CASES = [
    # "Are there any large metal spheres?"
    (FOUR, program(("scene", []), ("filter_size", [0], "large"), ("filter_material", [1], "metal"),
                   ("filter_shape", [2], "sphere"), ("exist", [3])), "no"),
    # "Is there a large cube?"
    (FOUR, program(("scene", []), ("filter_size", [0], "large"), ("filter_shape", [1], "cube"),
                   ("exist", [2])), "yes"),
    # "How many things are either red spheres or cubes?"
    (FOUR, program(("scene", []), ("filter_color", [0], "red"), ("filter_shape", [1], "sphere"),
                   ("scene", []), ("filter_shape", [3], "cube"), ("union", [2, 4]), ("count", [5])), "3"),
    # "How many things are right of the yellow cylinder?"
    (FOUR, program(*refer(0, color="yellow"), ("relate", [2], "right"), ("count", [3])), "2"),
    # "What shape is the small thing behind the yellow cylinder?"
    (FOUR, program(*refer(0, color="yellow"), ("relate", [2], "behind"), ("filter_size", [3], "small"),
                   ("unique", [4]), ("query_shape", [5])), "sphere"),
    # "What color is the cylinder?"
    (FOUR, program(*refer(0, shape="cylinder"), ("query_color", [2])), "yellow"),
    # "What is the large thing in front of the gray cube made of?"  (two hops would nest the same way)
    (FOUR, program(*refer(0, color="gray"), ("relate", [2], "front"), ("filter_size", [3], "large"),
                   ("unique", [4]), ("query_material", [5])), "rubber"),
    # "How many things are both right of the gray cube and behind the yellow cylinder?"
    (FOUR, program(*refer(0, color="gray"), ("relate", [2], "right"), *refer(4, color="yellow"),
                   ("relate", [6], "behind"), ("intersect", [3, 7]), ("count", [8])), "2"),
    # "How many other things are the same shape as the gray cube?" (the cube itself does not count)
    (FOUR, program(*refer(0, color="gray"), ("same_shape", [2]), ("count", [3])), "1"),
    # "Are there any other things that are the same color as the gray cube?"
    (FOUR, program(*refer(0, color="gray"), ("same_color", [2]), ("exist", [3])), "no"),
    # "Does the gray cube have the same size as the blue cube?"
    (FOUR, program(*refer(0, color="gray"), ("query_size", [2]), *refer(4, color="blue"), ("query_size", [6]),
                   ("equal_size", [3, 7])), "yes"),
    # "Is the gray cube the same color as the blue cube?"
    (FOUR, program(*refer(0, color="gray"), ("query_color", [2]), *refer(4, color="blue"),
                   ("query_color", [6]), ("equal_color", [3, 7])), "no"),
    # "Are there an equal number of cubes and metal things?"
    (FOUR, program(("scene", []), ("filter_shape", [0], "cube"), ("count", [1]), ("scene", []),
                   ("filter_material", [3], "metal"), ("count", [4]), ("equal_integer", [2, 5])), "yes"),
    # "Are there fewer spheres than cubes?" / "... more spheres than cubes?"
    (FOUR, program(("scene", []), ("filter_shape", [0], "sphere"), ("count", [1]), ("scene", []),
                   ("filter_shape", [3], "cube"), ("count", [4]), ("less_than", [2, 5])), "yes"),
    (FOUR, program(("scene", []), ("filter_shape", [0], "sphere"), ("count", [1]), ("scene", []),
                   ("filter_shape", [3], "cube"), ("count", [4]), ("greater_than", [2, 5])), "no"),
    # Twins: "How many green spheres are there?", and the cylinder tells them apart by relation.
    (TWINS, program(("scene", []), ("filter_color", [0], "green"), ("count", [1])), "2"),
    (TWINS, program(*refer(0, shape="cylinder"), ("relate", [2], "front"), ("filter_color", [3], "green"),
                    ("count", [4])), "2"),
    (TWINS, program(*refer(0, shape="cylinder"), ("same_size", [2]), ("count", [3])), "0"),
    # One object: nothing is left of it; "what size is the sphere?"
    (ALONE, program(*refer(0, shape="sphere"), ("relate", [2], "left"), ("exist", [3])), "no"),
    (ALONE, program(*refer(0, shape="sphere"), ("query_size", [2])), "large"),
]  # fmt: skip


@pytest.mark.parametrize(("scene", "nodes", "answer"), CASES)
def test_real_style_programs_give_clevr_answers(scene: dict, nodes: list[dict], answer: str) -> None:
    assert execute(nodes, scene) == answer


def test_older_node_spellings_and_tuple_inputs_run_the_same() -> None:
    """The generator's raw ``type``/``side_inputs``, the bracket token form, a reader's interned tuples."""
    old = [
        {"type": "scene", "inputs": [], "side_inputs": []},
        {"type": "filter_shape", "inputs": [0], "side_inputs": ["cube"]},
        {"type": "count", "inputs": [1], "side_inputs": []},
    ]
    bracket = [
        {"function": "scene"},
        {"function": "filter_shape[cube]", "inputs": [0]},
        {"function": "count", "inputs": [1]},
    ]
    interned = [
        {"function": n["type"], "inputs": tuple(n["inputs"]), "value_inputs": tuple(n["side_inputs"])} for n in old
    ]
    assert execute(old, FOUR) == execute(bracket, FOUR) == execute(interned, FOUR) == "2"
    assert function_of(old[1]) == "filter_shape"


SCENE_ONLY = ("scene", [])
BAD = {
    "unknown function": program(SCENE_ONLY, ("filter_weight", [0], "heavy"), ("count", [1])),
    "input out of range": program(SCENE_ONLY, ("count", [5])),
    "node refers forward": program(SCENE_ONLY, ("count", [2]), ("filter_color", [0], "red")),
    "node refers to itself": program(SCENE_ONLY, ("count", [1])),
    "negative input": program(SCENE_ONLY, ("count", [-1])),
    "too many inputs": program(SCENE_ONLY, ("count", [0, 0])),
    "too few inputs": program(SCENE_ONLY, ("union", [0])),
    "unique of two objects": program(SCENE_ONLY, ("filter_shape", [0], "cube"), ("unique", [1]),
                                     ("query_color", [2])),
    "unique of no object": program(SCENE_ONLY, ("filter_color", [0], "purple"), ("unique", [1]),
                                   ("query_color", [2])),
    "unique of many (relate)": program(*refer(0, color="gray"), ("relate", [2], "right"), ("unique", [3]),
                                       ("query_shape", [4])),
    "colour not in CLEVR": program(SCENE_ONLY, ("filter_color", [0], "orange"), ("count", [1])),
    "value of the wrong attribute": program(SCENE_ONLY, ("filter_shape", [0], "red"), ("count", [1])),
    "unknown relation": program(*refer(0, color="gray"), ("relate", [2], "above"), ("count", [3])),
    "missing value": program(SCENE_ONLY, ("filter_color", [0]), ("count", [1])),
    "value where none belongs": program(SCENE_ONLY, ("count", [0], "red")),
    "relate of a set": program(SCENE_ONLY, ("relate", [0], "left"), ("count", [1])),
    "count of an object": program(*refer(0, color="gray"), ("count", [2])),
    "comparing attributes of two kinds": program(*refer(0, color="gray"), ("query_shape", [2]),
                                                 *refer(4, color="blue"), ("query_shape", [6]),
                                                 ("equal_color", [3, 7])),
    "comparing a count with a colour": program(*refer(0, color="gray"), ("query_color", [2]), ("scene", []),
                                               ("count", [4]), ("equal_integer", [3, 5])),
    "ends in a set": program(SCENE_ONLY, ("filter_color", [0], "red")),
    "ends in an object": program(*refer(0, color="gray")),
    "empty": [],
    "node is not an object": ["scene"],
    "inputs not a list": [{"function": "scene", "inputs": 0}],
    "no function name": [{"inputs": []}],
}  # fmt: skip


@pytest.mark.parametrize("name", BAD)
def test_invalid_or_ill_posed_programs_raise_program_error_on_one_line(name: str) -> None:
    with pytest.raises(ProgramError) as raised:
        execute(BAD[name], FOUR)
    assert "\n" not in str(raised.value)


def test_a_scene_without_what_the_program_needs_raises_program_error() -> None:
    relate = program(*refer(0, shape="sphere"), ("relate", [2], "left"), ("count", [3]))
    with pytest.raises(ProgramError):
        execute(relate, {"objects": ALONE["objects"]})
    with pytest.raises(ProgramError):
        execute(program(SCENE_ONLY, ("count", [0])), {"things": []})
    with pytest.raises(ProgramError):
        execute(
            program(SCENE_ONLY, ("filter_color", [0], "red"), ("count", [1])),
            {"objects": [{"shape": "cube"}]},
        )


_NODE = st.fixed_dictionaries(
    {
        "function": st.sampled_from([*sorted(FUNCTION_NAMES), "bogus", "filter_color[red]"]),
        "inputs": st.lists(st.integers(-1, 6), max_size=3),
        "value_inputs": st.lists(st.sampled_from(["red", "cube", "left", "large", "metal", "x"]), max_size=2),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_NODE, min_size=1, max_size=7), st.sampled_from([FOUR, TWINS, ALONE]))
def test_any_program_either_answers_or_raises_program_error(nodes: list[dict], scene: dict) -> None:
    try:
        answer = execute(nodes, scene)
    except ProgramError:
        return
    assert isinstance(answer, str) and answer


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("exist", "exist"),
        ("count", "count"),
        ("equal_integer", "compare_integer"),
        ("less_than", "compare_integer"),
        ("greater_than", "compare_integer"),
        ("query_color", "query_attribute"),
        ("query_shape", "query_attribute"),
        ("query_material", "query_attribute"),
        ("query_size", "query_attribute"),
        ("equal_color", "compare_attribute"),
        ("equal_shape", "compare_attribute"),
        ("equal_material", "compare_attribute"),
        ("equal_size", "compare_attribute"),
    ],
)
def test_question_type_comes_from_the_last_function(last: str, expected: str) -> None:
    assert expected in QUESTION_TYPES
    assert question_type([{"function": "scene", "inputs": [], "value_inputs": []}, {"function": last}]) == expected
    assert question_type([{"type": last}]) == expected


@pytest.mark.parametrize("nodes", [[], [{"function": "unique"}], [{"function": "bogus"}], [{"inputs": []}]])
def test_question_type_of_a_program_without_one_raises(nodes: list) -> None:
    with pytest.raises(ProgramError):
        question_type(nodes)


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="no real-CLEVR fixture in this checkout")
def test_real_clevr_fixture_answers_are_reproduced() -> None:
    checked = 0
    for split in ("train", "val"):
        scenes_file = FIXTURE / "scenes" / f"CLEVR_{split}_scenes.json"
        scenes = {s["image_index"]: s for s in json.loads(scenes_file.read_text())["scenes"]}
        questions = json.loads((FIXTURE / "questions" / f"CLEVR_{split}_questions.json").read_text())["questions"]
        for question in questions:
            assert execute(question["program"], scenes[question["image_index"]]) == question["answer"]
            checked += 1
    assert checked > 0
