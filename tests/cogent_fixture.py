"""A tiny CLEVR-CoGenT v1.0 folder written out by hand, in the release's own layout and JSON formats.

Every scene, program and answer below is literal, so the checks that read it (executor agreement, condition
share) test the readers and the executor against data nothing in clbench produced. trainA and valA keep to
condition A, valB to condition B; every valB scene holds a cube, so none of them keeps to A.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from clbench.synth.render import COLOR_RGB  # CLEVR's own colours and directions: facts, not generator output
from clbench.synth.scenes import DIRECTIONS

COGENT = "CLEVR_CoGenT_v1.0"
IMAGE_SIZE = (48, 32)  # width, height

# Objects as (color, shape, material, size, x, y); no two objects of a scene share an x or a y.
SCENES: dict[str, list[list[tuple[str, str, str, str, float, float]]]] = {
    "trainA": [
        [
            ("gray", "cube", "rubber", "large", -2.0, -1.0),
            ("red", "cylinder", "metal", "small", 1.0, 2.0),
            ("yellow", "sphere", "rubber", "small", 2.0, -2.0),
        ],
        [
            ("blue", "cube", "metal", "small", -1.0, 1.0),
            ("blue", "cube", "rubber", "large", 2.0, 0.0),
            ("green", "cylinder", "rubber", "large", -2.5, -2.0),
            ("purple", "sphere", "metal", "large", 0.5, 2.5),
        ],
        [
            ("brown", "cube", "metal", "large", 0.0, 0.0),
            ("cyan", "cylinder", "metal", "small", -2.0, 2.0),
            ("cyan", "sphere", "rubber", "small", 2.0, 1.0),
        ],
        [
            ("yellow", "cube", "rubber", "small", 1.0, -1.0),
            ("purple", "cylinder", "metal", "large", -1.0, 1.5),
            ("red", "cylinder", "rubber", "small", 2.5, 2.0),
            ("gray", "sphere", "metal", "large", -2.5, -2.5),
        ],
    ],
    "valA": [
        [
            ("gray", "cube", "metal", "large", -2.0, 1.0),
            ("green", "cylinder", "rubber", "large", 1.0, -1.0),
            ("red", "sphere", "metal", "small", 2.0, 2.0),
        ],
        [
            ("brown", "cube", "rubber", "small", 0.0, -2.0),
            ("yellow", "cube", "metal", "large", -2.0, 2.0),
            ("purple", "cylinder", "metal", "small", 2.0, 0.0),
        ],
        [
            ("blue", "cube", "rubber", "large", 1.0, 1.0),
            ("cyan", "cylinder", "rubber", "small", -1.0, -1.0),
            ("blue", "sphere", "metal", "large", -2.5, 2.5),
            ("gray", "sphere", "rubber", "small", 2.5, -2.5),
        ],
        [
            ("yellow", "cube", "rubber", "small", -1.0, 0.0),
            ("red", "cylinder", "metal", "large", 1.5, 1.5),
        ],
    ],
    "valB": [
        [
            ("red", "cube", "rubber", "large", -2.0, -1.0),
            ("gray", "cylinder", "metal", "small", 1.0, 2.0),
            ("yellow", "sphere", "rubber", "small", 2.0, -2.0),
        ],
        [
            ("green", "cube", "metal", "small", -1.0, 1.0),
            ("purple", "cube", "rubber", "large", 2.0, 0.0),
            ("blue", "cylinder", "rubber", "large", -2.5, -2.0),
            ("blue", "sphere", "metal", "large", 0.5, 2.5),
        ],
        [
            ("cyan", "cube", "metal", "large", 0.0, 0.0),
            ("brown", "cylinder", "metal", "small", -2.0, 2.0),
            ("brown", "sphere", "rubber", "small", 2.0, 1.0),
        ],
        [
            ("purple", "cube", "rubber", "small", 1.0, -1.0),
            ("yellow", "cylinder", "metal", "large", -1.0, 1.5),
            ("gray", "cylinder", "rubber", "small", 2.5, 2.0),
            ("green", "sphere", "metal", "large", -2.5, -2.5),
        ],
    ],
    # No scenes ship for the test splits; these only give their images something to show.
    "testA": [
        [("gray", "cube", "metal", "large", -1.0, 1.0), ("cyan", "sphere", "rubber", "small", 1.0, -1.0)],
        [("red", "cylinder", "rubber", "large", 0.0, 0.0)],
    ],
    "testB": [
        [("green", "cube", "metal", "large", -1.0, 1.0), ("brown", "cylinder", "rubber", "small", 1.0, -1.0)],
        [("blue", "cylinder", "metal", "large", 0.0, 0.0)],
    ],
}


# ------------------------------------------------------------------------------- programs, CLEVR's node lists


def _add(program: list[dict], function: str, inputs: list[int] | None = None, value: str | None = None) -> int:
    program.append({"inputs": inputs or [], "function": function, "value_inputs": [value] if value else []})
    return len(program) - 1


def _objects(program: list[dict], filters: dict[str, str]) -> int:
    node = _add(program, "scene")
    for attribute, value in filters.items():
        node = _add(program, f"filter_{attribute}", [node], value)
    return node


def exist(**filters: str) -> list[dict]:
    program: list[dict] = []
    _add(program, "exist", [_objects(program, filters)])
    return program


def count(**filters: str) -> list[dict]:
    program: list[dict] = []
    _add(program, "count", [_objects(program, filters)])
    return program


def query(attribute: str, **filters: str) -> list[dict]:
    program: list[dict] = []
    _add(program, f"query_{attribute}", [_add(program, "unique", [_objects(program, filters)])])
    return program


def equal_count(first: dict[str, str], second: dict[str, str]) -> list[dict]:
    program: list[dict] = []
    a = _add(program, "count", [_objects(program, first)])
    b = _add(program, "count", [_objects(program, second)])
    _add(program, "equal_integer", [a, b])
    return program


def same(attribute: str, first: dict[str, str], second: dict[str, str]) -> list[dict]:
    program: list[dict] = []
    a = _add(program, f"query_{attribute}", [_add(program, "unique", [_objects(program, first)])])
    b = _add(program, f"query_{attribute}", [_add(program, "unique", [_objects(program, second)])])
    _add(program, f"equal_{attribute}", [a, b])
    return program


_FAMILY = {"exist": 1, "count": 2, "equal_integer": 3, "query_color": 4, "equal_shape": 5}

# (image index, question, program, answer), each answer worked out by hand from SCENES.
QUESTIONS: dict[str, list[tuple[int, str, list[dict], str]]] = {
    "trainA": [
        (0, "Are there any red cylinders?", exist(color="red", shape="cylinder"), "yes"),
        (0, "How many spheres are there?", count(shape="sphere"), "1"),
        (0, "What color is the large cube?", query("color", size="large", shape="cube"), "gray"),
        (1, "How many cubes are there?", count(shape="cube"), "2"),
        (1, "Are there any red cubes?", exist(color="red", shape="cube"), "no"),
        (
            1,
            "Are there the same number of cubes and cylinders?",
            equal_count({"shape": "cube"}, {"shape": "cylinder"}),
            "no",
        ),
        (
            2,
            "Is the brown thing the same shape as the rubber thing?",
            same("shape", {"color": "brown"}, {"material": "rubber"}),
            "no",
        ),
        (2, "What color is the sphere?", query("color", shape="sphere"), "cyan"),
        (
            2,
            "Are there the same number of cubes and cylinders?",
            equal_count({"shape": "cube"}, {"shape": "cylinder"}),
            "yes",
        ),
        (3, "How many cylinders are there?", count(shape="cylinder"), "2"),
        (3, "Are there any yellow cubes?", exist(color="yellow", shape="cube"), "yes"),
        (3, "What color is the large cylinder?", query("color", size="large", shape="cylinder"), "purple"),
    ],
    "valA": [
        (0, "Are there any green cylinders?", exist(color="green", shape="cylinder"), "yes"),
        (0, "How many metal things are there?", count(material="metal"), "2"),
        (0, "What color is the sphere?", query("color", shape="sphere"), "red"),
        (1, "How many cubes are there?", count(shape="cube"), "2"),
        (
            1,
            "Are there the same number of cubes and cylinders?",
            equal_count({"shape": "cube"}, {"shape": "cylinder"}),
            "no",
        ),
        (
            1,
            "Is the brown thing the same shape as the yellow thing?",
            same("shape", {"color": "brown"}, {"color": "yellow"}),
            "yes",
        ),
        (2, "How many spheres are there?", count(shape="sphere"), "2"),
        (2, "Are there any red cylinders?", exist(color="red", shape="cylinder"), "no"),
        (2, "What color is the cylinder?", query("color", shape="cylinder"), "cyan"),
        (3, "Are there any spheres?", exist(shape="sphere"), "no"),
        (
            3,
            "Are there the same number of cubes and cylinders?",
            equal_count({"shape": "cube"}, {"shape": "cylinder"}),
            "yes",
        ),
        (
            3,
            "Is the small thing the same shape as the metal thing?",
            same("shape", {"size": "small"}, {"material": "metal"}),
            "no",
        ),
    ],
    "valB": [
        (0, "Are there any red cubes?", exist(color="red", shape="cube"), "yes"),
        (0, "How many cylinders are there?", count(shape="cylinder"), "1"),
        (0, "What color is the large thing?", query("color", size="large"), "red"),
        (1, "How many blue things are there?", count(color="blue"), "2"),
        (1, "Are there any gray cylinders?", exist(color="gray", shape="cylinder"), "no"),
        (
            1,
            "Are there the same number of cubes and blue things?",
            equal_count({"shape": "cube"}, {"color": "blue"}),
            "yes",
        ),
        (
            2,
            "Is the large thing the same shape as the rubber thing?",
            same("shape", {"size": "large"}, {"material": "rubber"}),
            "no",
        ),
        (2, "What color is the cube?", query("color", shape="cube"), "cyan"),
        (2, "How many brown things are there?", count(color="brown"), "2"),
        (3, "How many cylinders are there?", count(shape="cylinder"), "2"),
        (3, "Are there any purple cubes?", exist(color="purple", shape="cube"), "yes"),
        (3, "What color is the large cylinder?", query("color", size="large", shape="cylinder"), "yellow"),
    ],
}

TEST_QUESTIONS: dict[str, list[tuple[int, str]]] = {
    "testA": [(0, "Are there any gray cubes?"), (0, "How many spheres are there?"), (1, "What color is the cylinder?")],
    "testB": [(0, "Are there any green cubes?"), (1, "How many cylinders are there?"), (1, "Is there a sphere?")],
}


# ----------------------------------------------------------------------------------------------- writing


def _filename(split: str, index: int) -> str:
    return f"CLEVR_{split}_{index:06d}.png"


def _pixel(x: float, y: float, z: float) -> list[float]:
    """Where an object lands in a 48×32 picture seen from the front: right is +x, further back is higher."""
    return [round(24 + 6 * x), round(20 - 3 * y - 4 * z), round(10.0 + y, 4)]


def _scene(split: str, index: int, objects: list[tuple[str, str, str, str, float, float]]) -> dict[str, Any]:
    records = []
    for color, shape, material, size, x, y in objects:
        z = 0.7 if size == "large" else 0.35
        records.append(
            {
                "color": color,
                "size": size,
                "rotation": 12.5,
                "shape": shape,
                "3d_coords": [x, y, z],
                "material": material,
                "pixel_coords": _pixel(x, y, z),
            }
        )
    xs = [o[4] for o in objects]
    ys = [o[5] for o in objects]
    n = range(len(objects))
    return {
        "image_index": index,
        "objects": records,
        "relationships": {
            "right": [[j for j in n if xs[j] > xs[i]] for i in n],
            "behind": [[j for j in n if ys[j] > ys[i]] for i in n],
            "front": [[j for j in n if ys[j] < ys[i]] for i in n],
            "left": [[j for j in n if xs[j] < xs[i]] for i in n],
        },
        "image_filename": _filename(split, index),
        "split": split,
        "directions": DIRECTIONS,
    }


def _draw(path: Path, scene: dict[str, Any]) -> None:
    """A gray ground with one square per object in its colour (twice as wide when large)."""
    image = Image.new("RGB", IMAGE_SIZE, (120, 120, 116))
    for obj in scene["objects"]:
        px, py, _ = obj["pixel_coords"]
        half = 3 if obj["size"] == "large" else 1
        image.paste(COLOR_RGB[obj["color"]], (px - half, py - half, px + half + 1, py + half + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _info(split: str) -> dict[str, str]:
    return {"split": split, "license": "Creative Commons Attribution (CC BY 4.0)", "version": "1.0", "date": "test"}


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")


def _write_questions(cogent: Path, split: str, questions: list[dict]) -> None:
    _write_json(cogent / "questions" / f"CLEVR_{split}_questions.json", {"info": _info(split), "questions": questions})


def write_cogent_fixture(root: Path) -> Path:
    """Write ``root/CLEVR_CoGenT_v1.0/`` (images, questions, and scenes for trainA, valA, valB); return ``root``."""
    cogent = Path(root) / COGENT
    for split, scenes in SCENES.items():
        written = [_scene(split, i, objects) for i, objects in enumerate(scenes)]
        for scene in written:
            _draw(cogent / "images" / split / scene["image_filename"], scene)
        if split in QUESTIONS:
            _write_json(cogent / "scenes" / f"CLEVR_{split}_scenes.json", {"info": _info(split), "scenes": written})
    for split, questions in QUESTIONS.items():
        payload = [
            {
                "image_index": index,
                "program": program,
                "question_index": position,
                "image_filename": _filename(split, index),
                "question_family_index": _FAMILY[program[-1]["function"]],
                "split": split,
                "answer": answer,
                "question": text,
            }
            for position, (index, text, program, answer) in enumerate(questions)
        ]
        _write_questions(cogent, split, payload)
    for split, questions in TEST_QUESTIONS.items():
        payload = [
            {
                "image_index": index,
                "question_index": position,
                "image_filename": _filename(split, index),
                "split": split,
                "question": text,
            }
            for position, (index, text) in enumerate(questions)
        ]
        _write_questions(cogent, split, payload)
    return Path(root)
