"""The state-description front-end: scene graphs drawn as attribute maps, and a run that reads them."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clbench.config import PRESETS, validate
from clbench.core.errors import DataError
from clbench.data.scene_maps import CHANNELS, build_scene_maps, draw
from clbench.run.build import build_benchmark
from clbench.run.loop import run
from clbench.strategy.contract import instantiate, resolve


def _object(color: str, shape: str, material: str, size: str, x: float, y: float) -> dict:
    return {"color": color, "shape": shape, "material": material, "size": size, "pixel_coords": [x, y, 10.0]}


def test_each_object_lights_its_four_attributes_at_its_cell():
    scene = {
        "objects": [
            _object("red", "cube", "metal", "large", 90, 10),
            _object("cyan", "sphere", "rubber", "small", 5, 60),
        ]
    }
    grid = draw(scene, grid=(4, 6), image_size=(100, 80))
    assert grid.shape == (4, 6, len(CHANNELS)) and grid.dtype == np.uint8
    lit = {(int(r), int(c), CHANNELS[k]) for r, c, k in zip(*np.nonzero(grid), strict=True)}
    assert lit == {
        *((0, 5, value) for value in ("red", "cube", "metal", "large")),  # x 90/100 → column 5, y 10/80 → row 0
        *((3, 0, value) for value in ("cyan", "sphere", "rubber", "small")),
    }


def test_objects_sharing_a_cell_add_up():
    scene = {
        "objects": [_object("red", "cube", "metal", "large", 1, 1), _object("red", "sphere", "metal", "small", 2, 2)]
    }
    grid = draw(scene, grid=(2, 2), image_size=(10, 10))
    assert grid[0, 0, CHANNELS.index("red")] == 2 and grid[0, 0, CHANNELS.index("cube")] == 1
    assert grid.sum() == 8


def test_an_unknown_attribute_is_a_data_error():
    with pytest.raises(DataError, match="unknown color 'pink'"):
        draw({"objects": [_object("pink", "cube", "metal", "large", 1, 1)]}, grid=(2, 2), image_size=(10, 10))


def test_an_object_without_pixel_coords_is_a_data_error():
    obj = _object("red", "cube", "metal", "large", 1, 1)
    del obj["pixel_coords"]
    with pytest.raises(DataError, match="without pixel_coords"):
        draw({"objects": [obj]}, grid=(2, 2), image_size=(10, 10))


def test_maps_follow_the_scenes_file_and_the_grid_sets_the_fingerprint(tiny_root: Path):
    clevr = tiny_root / "CLEVR_v1.0"
    coarse, fine = build_scene_maps(clevr, "val", (3, 4)), build_scene_maps(clevr, "val", (6, 9))
    assert coarse.shape[1:] == (3, 4, len(CHANNELS)) and fine.shape[1:] == (6, 9, len(CHANNELS))
    assert coarse.fingerprint != fine.fingerprint
    assert coarse.index["CLEVR_val_000000.png"] == 0
    # Every object is drawn: four attribute channels each.
    import json

    scenes = json.loads((clevr / "scenes" / "CLEVR_val_scenes.json").read_text())["scenes"]
    assert [int(m.sum()) for m in fine.array] == [4 * len(s["objects"]) for s in scenes]


def test_a_run_on_scene_maps_trains_both_experiences(tiny_root: Path, tracking_store: str):
    config = PRESETS["tiny"]
    config = replace(
        config,
        data=replace(config.data, root=str(tiny_root)),
        model=replace(config.model, stem="scene", image_height=4, image_width=6, stem_layers=0),
    )
    validate(config)
    scenario = build_benchmark(config, progress=False)
    x, _ = scenario.train_datasets[0][0]
    assert x.images.shape == (len(CHANNELS), 4, 6)
    result = run(
        config, instantiate(resolve("naive"), {}), tracking_uri=tracking_store, progress=False, out=io.StringIO()
    )
    assert result.accuracy.shape == (2, 2)
    assert result.accuracy.notna().all().all()
