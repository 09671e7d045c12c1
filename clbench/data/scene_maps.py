"""The state-description front-end: each scene graph drawn as a grid of per-location object attributes.

CLEVR papers call this the "state description" or oracle setting: the model sees which objects are where,
not pixels, so what it must learn is the reasoning alone. A scene becomes a uint8 map [rows, cols, 15] whose
channels are one-hot colour, shape, material and size, each object written at the cell of its
``pixel_coords`` (two objects sharing a cell add up). Maps are built in memory from the scenes JSON in well
under a second per thousand scenes, so unlike the image cache they are not stored on disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clbench.core.errors import DataError
from clbench.data import spec
from clbench.data.clevr import image_path, read_clevr_scenes

FORMAT_VERSION = 1  # bump when the drawing changes: the run's data fingerprint then changes too
CHANNELS: tuple[str, ...] = (*spec.COLORS, *spec.SHAPES, *spec.MATERIALS, *spec.SIZES)
_CHANNEL = {value: i for i, value in enumerate(CHANNELS)}


class SceneMaps:
    """[N, rows, cols, channels] uint8 maps and the row of each image file name: an `ImageCache` look-alike."""

    def __init__(self, split: str, array: np.ndarray, filenames: list[str], fingerprint: str) -> None:
        self.split = split
        self.array = array
        self.filenames = filenames
        self.index = {name: row for row, name in enumerate(filenames)}
        self.fingerprint = fingerprint
        self.shape = array.shape

    def __len__(self) -> int:
        return len(self.filenames)

    def sample(self, row: int) -> torch.Tensor:
        """Row `row` as the model reads it: uint8 [channels, rows, cols]."""
        return torch.from_numpy(np.array(self.array[row])).permute(2, 0, 1)

    def __repr__(self) -> str:
        return f"SceneMaps({self.split}, shape={self.shape})"


def _image_size(clevr_dir: Path, filename: str) -> tuple[int, int]:
    """(width, height) of the split's images: pixel_coords are in their frame. Reads one PNG header."""
    path = image_path(clevr_dir, filename)
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the size of {path} ({exc})", "unpack the CLEVR images again") from None


def draw(scene: dict, grid: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """One scene as a [rows, cols, channels] map of attribute counts."""
    rows, cols = grid
    width, height = image_size
    out = np.zeros((rows, cols, len(CHANNELS)), dtype=np.uint8)
    for obj in scene["objects"]:
        coords = obj.get("pixel_coords")
        if not isinstance(coords, list | tuple) or len(coords) < 2:
            raise DataError(
                f"scene {scene.get('image_filename')} has an object without pixel_coords",
                "the scene front-end places objects by pixel_coords: use scenes files as CLEVR ships them",
            )
        x, y = coords[:2]
        row = min(rows - 1, max(0, int(y * rows / height)))
        col = min(cols - 1, max(0, int(x * cols / width)))
        for attribute in spec.ATTRIBUTES:
            value = obj[attribute]
            if value not in _CHANNEL:
                raise DataError(
                    f"scene {scene.get('image_filename')} has an object with unknown {attribute} {value!r}",
                    f"use CLEVR's values: {', '.join(spec.ATTRIBUTES[attribute])}",
                )
            out[row, col, _CHANNEL[value]] += 1
    return out


def build_scene_maps(clevr_dir: Path, split: str, grid: tuple[int, int]) -> SceneMaps:
    """Read ``scenes/CLEVR_{split}_scenes.json`` and draw every scene at ``grid`` = (rows, cols)."""
    scenes = read_clevr_scenes(clevr_dir, split)
    filenames = [scene.get("image_filename") or f"CLEVR_{split}_{i:06d}.png" for i, scene in enumerate(scenes)]
    image_size = _image_size(clevr_dir, filenames[0])
    array = np.stack([draw(scene, grid, image_size) for scene in scenes])
    digest = hashlib.sha256(f"clbench-scene-maps v{FORMAT_VERSION} {grid} {image_size}".encode())
    digest.update(array.tobytes())
    digest.update("\n".join(filenames).encode())
    return SceneMaps(split, array, filenames, digest.hexdigest())
