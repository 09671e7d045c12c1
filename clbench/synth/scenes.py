"""Scenes as CLEVR describes them: objects on a ground plane, a camera, and the relations between objects.

The camera is orthographic and looks along +y from the front, tilted down by its elevation: "left" in the
image is -x, "front" (nearer the camera, lower in the image) is -y. Orthographic keeps "large" exactly twice
"small" everywhere in the picture, which a small model at 96×64 needs more than perspective.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clbench.data.spec import COLORS, MATERIALS, RELATIONS, SHAPES, SIZES
from clbench.synth.presets import SynthPreset

_WORLD_HALF = 3.0  # object centres lie in [-3, 3] × [-3, 3], as in CLEVR
RADIUS: dict[str, float] = {"large": 0.8, "small": 0.4}  # large is exactly twice small
_CUBE_HALF_SIDE = 0.8  # a cube's half side, as a share of its size's radius: it looks as big as a sphere
_RELATION_EPSILON = 0.2  # CLEVR's margin: j is `r` of i when (c_j - c_i) · d_r > epsilon
_CAMERA_DISTANCE = 12.0  # only sets the depth written in pixel_coords

DIRECTIONS: dict[str, list[float]] = {
    "right": [1.0, 0.0, 0.0],
    "behind": [0.0, 1.0, 0.0],
    "above": [0.0, 0.0, 1.0],
    "below": [0.0, 0.0, -1.0],
    "left": [-1.0, 0.0, 0.0],
    "front": [0.0, -1.0, 0.0],
}


def _half_height(shape: str, size: str) -> float:
    """Half the object's height, which is also its centre's z (CLEVR's 3d_coords z)."""
    return round(RADIUS[size] * (_CUBE_HALF_SIDE if shape == "cube" else 1.0), 4)


@dataclass(frozen=True)
class Camera:
    """Where the scene lands in the image: ``scale`` pixels per scene unit, ground origin at the centre."""

    width: int
    height: int
    elevation_deg: float
    scale: float
    center_x: float
    center_y: float

    @classmethod
    def fit(cls, width: int, height: int, elevation_deg: float) -> Camera:
        """The largest scale that keeps every possible object inside the image."""
        sin_e, cos_e = _sin_cos(elevation_deg)
        reach = _WORLD_HALF + max(RADIUS.values())
        v_low = -reach * sin_e
        v_high = reach * sin_e + 2 * max(RADIUS.values()) * cos_e
        scale = min(0.96 * width / (2 * reach), 0.96 * height / (v_high - v_low))
        center_y = height / 2 + scale * (v_high + v_low) / 2
        return cls(width, height, elevation_deg, scale, width / 2, center_y)

    def project(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """(column, row, depth) of a scene point; rows grow downwards, depth grows away from the camera."""
        sin_e, cos_e = _sin_cos(self.elevation_deg)
        column = self.center_x + self.scale * x
        row = self.center_y - self.scale * (y * sin_e + z * cos_e)
        return column, row, _CAMERA_DISTANCE + y * cos_e - z * sin_e


def _sin_cos(degrees: float) -> tuple[float, float]:
    return math.sin(math.radians(degrees)), math.cos(math.radians(degrees))


def _compute_relationships(objects: Sequence[Mapping], epsilon: float = _RELATION_EPSILON) -> dict[str, list]:
    """CLEVR's rule: ``relationships[r][i]`` lists each j with (coords_j - coords_i) · directions[r] > eps."""
    relationships: dict[str, list] = {}
    for relation in RELATIONS:
        direction = DIRECTIONS[relation]
        relationships[relation] = [
            [
                j
                for j, other in enumerate(objects)
                if j != i
                and sum((b - a) * d for a, b, d in zip(me["3d_coords"], other["3d_coords"], direction, strict=True))
                > epsilon
            ]
            for i, me in enumerate(objects)
        ]
    return relationships


def _screen_box(obj: Mapping, sin_e: float, cos_e: float) -> tuple[float, float, float, float]:
    """A box around the object on the image plane, in scene units: (left, right, low, high)."""
    x, y, z = obj["3d_coords"]
    radius = RADIUS[obj["size"]]
    if obj["shape"] == "sphere":
        return x - radius, x + radius, y * sin_e + z * cos_e - radius, y * sin_e + z * cos_e + radius
    reach = radius
    if obj["shape"] == "cube":
        turn = math.radians(obj["rotation"])
        reach = z * (abs(math.cos(turn)) + abs(math.sin(turn)))
    return x - reach, x + reach, (y - reach) * sin_e, (y + reach) * sin_e + 2 * z * cos_e


def _too_hidden(objects: Sequence[Mapping], limit: float, elevation_deg: float) -> bool:
    """Whether nearer objects cover more than ``limit`` of some object's screen box (boxes overstate it)."""
    sin_e, cos_e = _sin_cos(elevation_deg)
    boxes = [_screen_box(obj, sin_e, cos_e) for obj in objects]
    for i, (left, right, low, high) in enumerate(boxes):
        covered = 0.0
        for j, (l2, r2, lo2, hi2) in enumerate(boxes):
            if objects[j]["3d_coords"][1] < objects[i]["3d_coords"][1]:
                covered += max(0.0, min(right, r2) - max(left, l2)) * max(0.0, min(high, hi2) - max(low, lo2))
        if covered > limit * (right - left) * (high - low):
            return True
    return False


def _fits(x: float, y: float, radius: float, placed: Sequence[Mapping], preset: SynthPreset) -> bool:
    for other in placed:
        ox, oy, _ = other["3d_coords"]
        if abs(x - ox) < preset.direction_margin or abs(y - oy) < preset.direction_margin:
            return False
        if math.hypot(x - ox, y - oy) < radius + RADIUS[other["size"]] + preset.min_gap:
            return False
    return True


def sample_objects(
    rng: random.Random, preset: SynthPreset, palettes: Mapping[str, Sequence[str]] | None = None
) -> list[dict]:
    """Objects with uniform attributes, placed one by one; a crowded or hidden layout starts over.

    ``palettes`` (a CoGenT condition) limits some shapes' colours: a colour outside its shape's palette is
    drawn again from the palette, which keeps colours uniform over it and leaves the unconditioned draws
    (hence the CLEVR world's bytes) exactly as they were.
    """
    while True:
        count = rng.randint(preset.min_objects, preset.max_objects)
        placed: list[dict] = []
        for _ in range(count):
            size, color, material, shape = (rng.choice(v) for v in (SIZES, COLORS, MATERIALS, SHAPES))
            if palettes is not None and color not in palettes.get(shape, COLORS):
                color = rng.choice(palettes[shape])
            rotation = round(rng.uniform(0.0, 360.0), 3)
            for _attempt in range(40):
                x = round(rng.uniform(-_WORLD_HALF, _WORLD_HALF), 3)
                y = round(rng.uniform(-_WORLD_HALF, _WORLD_HALF), 3)
                if _fits(x, y, RADIUS[size], placed, preset):
                    break
            else:
                break
            placed.append(
                {
                    "color": color,
                    "size": size,
                    "rotation": rotation,
                    "shape": shape,
                    "3d_coords": [x, y, _half_height(shape, size)],
                    "material": material,
                }
            )
        if len(placed) == count and not _too_hidden(placed, preset.max_occlusion, preset.camera_elevation_deg):
            return placed


def make_scene(objects: list[dict], camera: Camera, split: str, index: int) -> dict:
    """The scene dict exactly as CLEVR_{split}_scenes.json holds it (same keys, same order)."""
    for obj in objects:
        column, row, depth = camera.project(*obj["3d_coords"])
        obj["pixel_coords"] = [round(column), round(row), round(depth, 4)]
    return {
        "image_index": index,
        "objects": objects,
        "relationships": _compute_relationships(objects),
        "image_filename": image_filename(split, index),
        "split": split,
        "directions": {name: list(vector) for name, vector in DIRECTIONS.items()},
    }


def image_filename(split: str, index: int) -> str:
    return f"CLEVR_{split}_{index:06d}.png"
