"""The embedded dataset: real CLEVR formats, same bytes per seed, answers the executor agrees with."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clbench.core.errors import ClbenchError, DataError
from clbench.data.programs import execute, question_type
from clbench.data.spec import ANSWERS, CLEVR_DIRNAME, HUMANS_DIRNAME, QUESTION_TYPES, RELATIONS
from clbench.synth import (
    MANIFEST_NAME,
    PRESETS,
    default_data_root,
    ensure_default_data,
    generate,
    is_complete,
    pregenerated,
    read_manifest,
)
from clbench.synth import dataset as synth_dataset
from clbench.synth.humans import HumansEngine
from clbench.synth.questions import FAMILIES, FAMILY_INDEX, QuestionEngine
from clbench.synth.render import render
from clbench.synth.scenes import Camera, make_scene, sample_objects

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "tiny", "tiny", seed=0, progress=False)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scenes(root: Path, split: str) -> dict[int, dict]:
    payload = _load(root / CLEVR_DIRNAME / "scenes" / f"CLEVR_{split}_scenes.json")
    return {scene["image_index"]: scene for scene in payload["scenes"]}


def _questions(root: Path, split: str) -> list[dict]:
    return _load(root / CLEVR_DIRNAME / "questions" / f"CLEVR_{split}_questions.json")["questions"]


def _humans(root: Path, split: str) -> list[dict]:
    return _load(root / HUMANS_DIRNAME / f"CLEVR-Humans-{split}.json")["questions"]


def _sample_scenes(count: int, seed: int = 7) -> list[dict]:
    camera = Camera.fit(TINY.image_width, TINY.image_height, TINY.camera_elevation_deg)
    rng = random.Random(seed)
    return [make_scene(sample_objects(rng, TINY), camera, "train", i) for i in range(count)]


# ------------------------------------------------------------------------------------------ layout, seeds


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tiny_root: Path, tmp_path: Path) -> None:
    again = _files(generate(tmp_path / "again", "tiny", seed=0, progress=False))
    assert again == _files(tiny_root)
    other = _files(generate(tmp_path / "other", "tiny", seed=1, progress=False))
    assert other.keys() == again.keys()
    questions = f"{CLEVR_DIRNAME}/questions/CLEVR_train_questions.json"
    image = f"{CLEVR_DIRNAME}/images/train/CLEVR_train_000000.png"
    assert other[questions] != again[questions]
    assert other[image] != again[image]


@pytest.mark.parametrize("world, preset, seed", pregenerated.SHIPPED, ids=lambda v: str(v))
def test_every_shipped_question_archive_is_what_the_generator_samples(world: str, preset: str, seed: int) -> None:
    """The archives a first run takes its questions from hold, byte for byte, what sampling them gives today: a
    change to the generator that forgets `python -m clbench.synth.pregenerated` fails here."""
    settings = PRESETS[preset]
    path = pregenerated.archive_path(world, preset, seed)
    shipped = pregenerated.read(path, synth_dataset.questions_key(settings, seed, world))
    assert shipped is not None, f"{path} is missing or made for other settings"
    assert shipped == synth_dataset.question_files(settings, seed, world)
    assert path.stat().st_size < 2_000_000


@pytest.mark.parametrize("world", ["clevr", "cogent"])
def test_a_world_from_a_question_archive_is_byte_identical_to_one_sampled(
    world: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an archive for its settings, `generate` samples no question and writes the same bytes, manifest
    included; an archive made for another seed is ignored."""
    sampled = _files(generate(tmp_path / "sampled", "tiny", seed=0, progress=False, world=world))
    monkeypatch.setattr(pregenerated, "FOLDER", tmp_path / "archives")
    files = synth_dataset.question_files(TINY, 0, world)
    pregenerated.write(pregenerated.archive_path(world, "tiny", 0), synth_dataset.questions_key(TINY, 0, world), files)
    pregenerated.write(pregenerated.archive_path(world, "tiny", 1), synth_dataset.questions_key(TINY, 0, world), files)

    def no_sampling(*args, **kwargs):
        raise AssertionError("questions were sampled although an archive matches")

    with monkeypatch.context() as patch:
        patch.setattr(synth_dataset, "question_files", no_sampling)
        assert _files(generate(tmp_path / "shipped", "tiny", seed=0, progress=False, world=world)) == sampled
    assert (
        pregenerated.read(pregenerated.archive_path(world, "tiny", 1), synth_dataset.questions_key(TINY, 1, world))
        is None
    )
    again = tmp_path / "archives" / "again.tar.xz"
    pregenerated.write(again, synth_dataset.questions_key(TINY, 0, world), files)
    assert again.read_bytes() == pregenerated.archive_path(world, "tiny", 0).read_bytes()  # reproducible
    again.write_bytes(again.read_bytes()[:1000])  # a damaged archive: sampled instead
    assert pregenerated.read(again, synth_dataset.questions_key(TINY, 0, world)) is None


def test_layout_and_fields_follow_the_clevr_release(tiny_root: Path) -> None:
    clevr = tiny_root / CLEVR_DIRNAME
    for split, count in (("train", TINY.train_images), ("val", TINY.val_images), ("test", TINY.test_images)):
        images = sorted(p.name for p in (clevr / "images" / split).iterdir())
        assert images == [f"CLEVR_{split}_{i:06d}.png" for i in range(count)]
        payload = _load(clevr / "questions" / f"CLEVR_{split}_questions.json")
        assert payload["info"]["split"] == split
        for position, question in enumerate(payload["questions"]):
            assert question["question_index"] == position
            assert question["split"] == split
            assert question["image_filename"] == f"CLEVR_{split}_{question['image_index']:06d}.png"
            if split == "test":  # like the real test split: no answers, no programs
                assert "answer" not in question and "program" not in question
            else:
                assert FAMILY_INDEX[next(iter(FAMILIES))] == 0
                assert isinstance(question["question_family_index"], int)
                for node in question["program"]:
                    assert list(node) == ["inputs", "function", "value_inputs"]
    assert not (clevr / "scenes" / "CLEVR_test_scenes.json").exists()
    for split in ("train", "val"):
        for index, scene in _scenes(tiny_root, split).items():
            assert scene["image_filename"] == f"CLEVR_{split}_{index:06d}.png"
            assert set(scene["directions"]) == {"left", "right", "front", "behind", "above", "below"}
            for obj in scene["objects"]:
                assert {"color", "shape", "material", "size", "3d_coords", "pixel_coords", "rotation"} <= set(obj)
                x, y, z = obj["3d_coords"]
                assert -3 <= x <= 3 and -3 <= y <= 3 and z > 0
    assert read_manifest(tiny_root)["seed"] == 0


# ------------------------------------------------------------------------------------------------ scenes


def test_relationships_agree_with_3d_coordinates_and_the_picture(tiny_root: Path) -> None:
    for split in ("train", "val"):
        for scene in _scenes(tiny_root, split).values():
            objects = scene["objects"]
            for relation in RELATIONS:
                direction = np.array(scene["directions"][relation])
                for i, me in enumerate(objects):
                    expected = [
                        j
                        for j, other in enumerate(objects)
                        if j != i and (np.array(other["3d_coords"]) - me["3d_coords"]) @ direction > 0.2
                    ]
                    assert scene["relationships"][relation][i] == expected
            for i, me in enumerate(objects):
                for j, other in enumerate(objects):
                    if i == j:
                        continue
                    # margins keep every pair clearly left/right and front/behind of each other
                    assert (j in scene["relationships"]["left"][i]) != (j in scene["relationships"]["right"][i])
                    assert (j in scene["relationships"]["front"][i]) != (j in scene["relationships"]["behind"][i])
                    # "right" is right in the image, "front" is nearer the camera
                    if j in scene["relationships"]["right"][i]:
                        assert other["pixel_coords"][0] > me["pixel_coords"][0]
                    if j in scene["relationships"]["front"][i] and other["size"] == me["size"]:
                        assert other["pixel_coords"][2] < me["pixel_coords"][2]
                        assert other["pixel_coords"][1] > me["pixel_coords"][1]


def test_rendered_image_has_the_preset_size_and_shows_every_object(tiny_root: Path) -> None:
    camera = Camera.fit(TINY.image_width, TINY.image_height, TINY.camera_elevation_deg)
    background = np.asarray(render({"objects": []}, camera), dtype=np.int32)
    for index, scene in list(_scenes(tiny_root, "train").items())[:10]:
        path = tiny_root / CLEVR_DIRNAME / "images" / "train" / scene["image_filename"]
        image = Image.open(path)
        assert image.size == (TINY.image_width, TINY.image_height)
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
        for obj in scene["objects"]:
            column, row, _ = obj["pixel_coords"]
            near = (slice(max(row - 1, 0), row + 2), slice(max(column - 1, 0), column + 2))
            assert np.abs(pixels[near] - background[near]).sum(axis=2).max() > 60, (index, obj)


def _one(shape: str = "sphere", size: str = "large", material: str = "rubber", color: str = "red") -> np.ndarray:
    camera = Camera.fit(96, 64, TINY.camera_elevation_deg)
    objects = [{"shape": shape, "size": size, "material": material, "color": color, "rotation": 30.0}]
    objects[0]["3d_coords"] = [
        0.0,
        0.0,
        0.8 * (1 if size == "large" else 0.5) * (0.8 if shape == "cube" else 1),
    ]
    return np.asarray(render({"objects": objects}, camera), dtype=np.int32)


def _mask(pixels: np.ndarray) -> np.ndarray:
    empty = np.asarray(render({"objects": []}, Camera.fit(96, 64, TINY.camera_elevation_deg)), dtype=np.int32)
    return np.abs(pixels - empty).sum(axis=2) > 40


def test_sizes_shapes_and_materials_are_visibly_different() -> None:
    large, small = _mask(_one(size="large")).sum(), _mask(_one(size="small")).sum()
    assert 3.0 < large / small < 5.5  # twice the radius, about four times the area
    masks = {shape: _mask(_one(shape=shape)) for shape in ("cube", "sphere", "cylinder")}
    for a, b in (("cube", "sphere"), ("cube", "cylinder"), ("sphere", "cylinder")):
        overlap = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert overlap < 0.9, (a, b)
    for shape in ("cube", "sphere", "cylinder"):
        for color in ("red", "blue", "gray", "yellow"):
            metal, rubber = (
                _one(shape, material="metal", color=color),
                _one(shape, material="rubber", color=color),
            )
            edge = _mask(rubber)  # keep away from the silhouette, where pixels mix with the ground
            inside = edge & np.roll(edge, 1, 0) & np.roll(edge, -1, 0) & np.roll(edge, 1, 1) & np.roll(edge, -1, 1)
            whitest = metal.min(axis=2)[inside].max(), rubber.min(axis=2)[inside].max()
            assert whitest[0] > whitest[1] + 120, (shape, color, whitest)  # a near-white highlight


# ---------------------------------------------------------------------------------------------- questions


def test_executor_reproduces_every_generated_answer(tiny_root: Path) -> None:
    for split in ("train", "val"):
        scenes = _scenes(tiny_root, split)
        for question in _questions(tiny_root, split):
            scene = scenes[question["image_index"]]
            assert execute(question["program"], scene) == question["answer"], question["question"]
            family = list(FAMILIES)[question["question_family_index"]]
            assert question_type(question["program"]) == FAMILIES[family][0]


def test_every_question_type_is_present_and_no_answer_dominates_a_type() -> None:
    engine = QuestionEngine(TINY, random.Random(3))
    answers: defaultdict[str, Counter] = defaultdict(Counter)
    texts = []
    for scene in _sample_scenes(250):
        for question in engine.for_scene(scene):
            answers[question.question_type][question.answer] += 1
            texts.append(question.text)
    assert set(answers) == set(QUESTION_TYPES)
    limits = {
        "exist": 0.55,
        "compare_integer": 0.55,
        "compare_attribute": 0.55,
        "count": 0.3,
        "query_attribute": 0.2,
    }
    for kind, counter in answers.items():
        share = max(counter.values()) / sum(counter.values())
        assert share <= limits[kind], (kind, counter)
    assert len(answers["count"]) >= 5 and len(answers["query_attribute"]) == 15
    assert 0.15 < sum(answers["exist"].values()) / len(texts) < 0.25  # types mixed evenly
    assert any(" left of " in t or " behind " in t for t in texts)  # relations
    assert any("either" in t or " or " in t for t in texts)  # union
    assert any(" both " in t for t in texts)  # intersect
    assert any("same" in t and "other" in t for t in texts)  # same_*


def test_questions_relate_one_hop_and_sometimes_two(tiny_root: Path) -> None:
    hops = Counter(
        sum(node["function"] == "relate" for node in q["program"])
        for split in ("train", "val")
        for q in _questions(tiny_root, split)
    )
    engine_hops = Counter()
    engine = QuestionEngine(TINY, random.Random(5))
    for scene in _sample_scenes(200, seed=11):
        for question in engine.for_scene(scene):
            engine_hops[sum(node["function"] == "relate" for node in question.program)] += 1
    assert hops[0] > hops[1] > 0
    assert engine_hops[2] > 0


# ------------------------------------------------------------------------------------------------- humans


def _words(texts: list[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z-]+", t.lower())}


def test_humans_split_uses_new_words_answers_within_clevr_and_no_programs(tiny_root: Path) -> None:
    clevr_words = _words([q["question"] for split in ("train", "val", "test") for q in _questions(tiny_root, split)])
    humans = {split: _humans(tiny_root, split) for split in ("train", "val", "test")}
    assert [len(humans[s]) for s in ("train", "val", "test")] == [
        TINY.humans_train,
        TINY.humans_val,
        TINY.humans_test,
    ]
    humans_words = _words([q["question"] for qs in humans.values() for q in qs])
    new = humans_words - clevr_words
    assert {"ball", "block", "shiny", "matte"} & new
    assert {"leftmost", "different", "all", "colour", "hue"} & new
    for split, questions in humans.items():
        source = "train" if split == "train" else "val"  # humans val and test ask about CLEVR's val images
        for q in questions:
            assert q["answer"] in ANSWERS
            assert "program" not in q
            assert q["image_filename"] == f"CLEVR_{source}_{q['image_index']:06d}.png"
            assert (tiny_root / CLEVR_DIRNAME / "images" / source / q["image_filename"]).is_file()


def test_humans_answers_are_balanced_within_each_kind() -> None:
    engine = HumansEngine(TINY, random.Random(2))
    answers: defaultdict[str, Counter] = defaultdict(Counter)
    for _, question in engine.generate(_sample_scenes(200), 1500):
        answers[question.kind][question.answer] += 1
    assert len(answers) == 10
    for kind, counter in answers.items():
        assert max(counter.values()) / sum(counter.values()) <= 0.6, (kind, counter)


def test_humans_answers_are_right_for_the_scene() -> None:
    scenes = _sample_scenes(60)
    engine = HumansEngine(TINY, random.Random(4))
    for scene, question in engine.generate(scenes, 400):
        text, objects = question.text.lower(), scene["objects"]
        if text.startswith("how many different colo") and " among " not in text and " have" not in text:
            assert question.answer == str(len({o["color"] for o in objects}))
        if question.kind == "extreme_query" and "leftmost" in text and "color" in text:
            leftmost = min(objects, key=lambda o: o["3d_coords"][0])
            if text.endswith(("leftmost object", "leftmost object?", "leftmost thing", "leftmost thing?")):
                assert question.answer == leftmost["color"]


# ------------------------------------------------------------------------------------ atomic, reuse, refuse


def test_interrupted_generation_leaves_nothing_that_looks_like_a_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = synth_dataset._write_json

    def write_then_die(path: Path, payload: object) -> None:
        if "val_scenes" in path.name:  # after the question files and the train scenes
            raise KeyboardInterrupt
        real_write(path, payload)

    monkeypatch.setattr(synth_dataset, "_write_json", write_then_die)
    out = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        generate(out, "tiny", progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the staging folder went too
    assert not is_complete(out, "tiny", 0)


def test_refuses_a_folder_it_did_not_generate(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError) as raised:
        generate(out, "tiny", progress=False)
    assert "fix:" in str(raised.value) and "\n" not in str(raised.value)
    assert (out / "notes.txt").read_text() == "keep me"


def test_regenerating_replaces_an_earlier_generated_dataset(tiny_root: Path, tmp_path: Path) -> None:
    out = generate(tmp_path / "data", "tiny", seed=0, progress=False)
    generate(out, "tiny", seed=1, progress=False)
    assert read_manifest(out)["seed"] == 1
    assert is_complete(out, "tiny", 1) and not is_complete(out, "tiny", 0)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_unknown_preset_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ClbenchError, match="tiny, small"):
        generate(tmp_path / "x", "huge", progress=False)


def test_default_data_is_generated_once_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CLBENCH_DATA_HOME", str(tmp_path))
    root = default_data_root("tiny", 3)
    assert root == tmp_path / "synth-tiny-seed3"
    assert ensure_default_data("tiny", 3, progress=False) == root
    assert str(root) in capsys.readouterr().err
    assert (root / MANIFEST_NAME).is_file()

    def must_not_run(*args: object, **kwargs: object) -> Path:
        raise AssertionError("generated again")

    monkeypatch.setattr(synth_dataset, "generate", must_not_run)
    assert ensure_default_data("tiny", 3, progress=False) == root
    assert capsys.readouterr().err == ""


def test_default_root_without_the_variable_is_in_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA_HOME", raising=False)
    assert default_data_root() == Path.home() / ".cache" / "clbench" / "data" / "synth-small-seed0"
