"""CLEVR-CoGenT: the real layout read and checked, the generated world keeping its conditions, missing splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clbench.core.errors import ConfigError, DataError
from clbench.data import spec
from clbench.data.cache import prepare_dataset
from clbench.data.check import check_dataset
from clbench.data.clevr import (
    DatasetRoot,
    detect_release,
    image_path,
    image_split,
    read_clevr_questions,
    read_clevr_scenes,
    require_split,
)
from clbench.synth import (
    PRESETS,
    default_data_root,
    generate,
    is_complete,
    read_manifest,
    split_sizes,
)
from tests.cogent_fixture import QUESTIONS, write_cogent_fixture

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cogent_fixture(tmp_path_factory.mktemp("cogent") / "real")


@pytest.fixture(scope="module")
def cogent_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("cogent") / "tiny", "tiny", seed=0, progress=False, world="cogent")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _share_obeying(clevr_dir: Path, split: str, condition: str) -> float:
    scenes = read_clevr_scenes(clevr_dir, split)
    return sum(spec.obeys(s["objects"], condition) for s in scenes) / len(scenes)


# -------------------------------------------------------------------------------------------- the spec


def test_conditions_swap_the_cube_and_cylinder_palettes_and_leave_spheres_free() -> None:
    a, b = spec.COGENT_CONDITIONS["A"], spec.COGENT_CONDITIONS["B"]
    assert (a["cube"], a["cylinder"]) == (b["cylinder"], b["cube"])
    assert set(a["cube"]) | set(a["cylinder"]) == set(spec.COLORS) and not set(a["cube"]) & set(a["cylinder"])
    assert [spec.condition_of(s) for s in spec.ALL_SPLITS] == [None, None, None, "A", "A", "B", "A", "B"]
    red_sphere = {"shape": "sphere", "color": "red"}
    assert spec.obeys([red_sphere, {"shape": "cube", "color": "gray"}], "A")
    assert not spec.obeys([red_sphere, {"shape": "cube", "color": "gray"}], "B")
    assert spec.obeys([red_sphere], "B") and spec.obeys([], "A")


def test_cogent_image_names_parse_to_their_split() -> None:
    for split in spec.COGENT_SPLITS:
        assert image_split(f"CLEVR_{split}_000123.png") == split
    assert image_split("CLEVR_train_000123.png") == "train"
    clevr_dir = Path("/data") / spec.COGENT_DIRNAME
    assert image_path(clevr_dir, "CLEVR_valB_000007.png") == clevr_dir / "images" / "valB" / "CLEVR_valB_000007.png"
    for bad in ("CLEVR_trainB_000001.png", "CLEVR_valC_000001.png", "CLEVR_testa_000001.png"):
        with pytest.raises(DataError, match=r"CLEVR_<split>_<index>\.png"):
            image_split(bad)


# ------------------------------------------------------------------------------- the hand-written fixture


def test_hand_written_fixture_checks_with_full_agreement_and_every_scene_in_its_condition(
    fixture_root: Path,
) -> None:
    report = check_dataset(fixture_root)
    assert report.release == spec.COGENT_DIRNAME and report.root.humans is None
    assert report.executor_agreement == 1.0 and report.mismatches == []
    assert report.executed == sum(len(q) for q in QUESTIONS.values()) == 36
    assert report.condition_share == {"trainA": 1.0, "valA": 1.0, "valB": 1.0}
    assert report.counts.loc["CoGenT trainA", "total"] == 12
    assert report.counts.loc["CoGenT testB", "no program"] == 3
    text = report.render()
    assert "executor agreement: 100.00 %" in text
    assert "condition: trainA 100.0 % of 4 scenes obey A" in text
    assert "condition: valB 100.0 % of 4 scenes obey B" in text
    clevr_dir = report.root.clevr
    assert _share_obeying(clevr_dir, "valB", "A") == 0.0  # the fixture's B scenes all break A


def test_fixture_splits_have_the_size_the_scenario_needs(fixture_root: Path) -> None:
    clevr_dir = fixture_root / spec.COGENT_DIRNAME
    for split in ("trainA", "valA", "valB"):
        records = read_clevr_questions(clevr_dir, split)
        assert len(records) >= 12
        assert len({r.image_index for r in records}) >= 4
        assert len({r.question_type for r in records}) >= 2
        assert all(r.answer is not None and r.program is not None for r in records)
    for split in ("testA", "testB"):
        records = read_clevr_questions(clevr_dir, split)
        assert records and all(r.answer is None and r.program is None for r in records)


def test_cogent_root_is_located_by_name_and_detected(fixture_root: Path) -> None:
    clevr_dir = fixture_root / spec.COGENT_DIRNAME
    found = DatasetRoot.locate(fixture_root, clevr_dirname=spec.COGENT_DIRNAME)
    assert (found.root, found.clevr, found.humans) == (fixture_root, clevr_dir, None)
    assert DatasetRoot.locate(clevr_dir, clevr_dirname=spec.COGENT_DIRNAME).clevr == clevr_dir
    assert detect_release(fixture_root) == detect_release(clevr_dir) == spec.COGENT_DIRNAME
    with pytest.raises(DataError, match=f"holds no {spec.CLEVR_DIRNAME}/ folder"):
        DatasetRoot.locate(fixture_root)  # the default still asks for CLEVR v1.0


def test_locating_a_missing_cogent_folder_names_the_folder_asked_for(tmp_path: Path) -> None:
    tmp_path.joinpath("empty").mkdir()
    for target in (tmp_path / "nowhere", tmp_path / "empty"):
        with pytest.raises(DataError) as raised:
            DatasetRoot.locate(target, clevr_dirname=spec.COGENT_DIRNAME)
        message = str(raised.value)
        assert str(target) in message and spec.COGENT_DIRNAME in message and "--world cogent" in message
        assert "\n" not in message


def test_test_splits_have_no_scenes_and_say_which_to_use(fixture_root: Path) -> None:
    with pytest.raises(DataError, match="CLEVR-CoGenT has no test scenes; use trainA, valA or valB"):
        read_clevr_scenes(fixture_root / spec.COGENT_DIRNAME, "testA")


def test_scenes_written_with_relations_read_as_relationships(fixture_root: Path, tmp_path: Path) -> None:
    clevr_dir = tmp_path / spec.COGENT_DIRNAME
    shutil.copytree(fixture_root / spec.COGENT_DIRNAME, clevr_dir)
    path = clevr_dir / "scenes" / "CLEVR_valA_scenes.json"
    payload = json.loads(path.read_text())
    for scene in payload["scenes"]:
        scene["relations"] = scene.pop("relationships")
    path.write_text(json.dumps(payload))
    assert read_clevr_scenes(clevr_dir, "valA")[0]["relationships"]["left"] == [[], [0], [0, 1]]


def test_prepare_caches_every_cogent_split(fixture_root: Path, tmp_path: Path) -> None:
    caches = prepare_dataset(fixture_root, (8, 12), jobs=1, progress=False, cache_dir=tmp_path)
    assert list(caches) == list(spec.COGENT_SPLITS)
    assert caches["valB"].shape == (4, 8, 12, 3) and caches["testA"].shape[0] == 2


# ------------------------------------------------------------------------------------- missing splits


@pytest.mark.parametrize(
    "part", ["questions/CLEVR_valB_questions.json", "images/valB", "scenes/CLEVR_valB_scenes.json"]
)
def test_a_cogent_folder_missing_valb_is_a_one_line_error_naming_it(
    fixture_root: Path, tmp_path: Path, part: str
) -> None:
    root = tmp_path / "root"
    shutil.copytree(fixture_root, root)
    missing = root / spec.COGENT_DIRNAME / part
    shutil.rmtree(missing) if missing.is_dir() else missing.unlink()
    for call in (lambda: require_split(root / spec.COGENT_DIRNAME, "valB"), lambda: check_dataset(root)):
        with pytest.raises(DataError) as raised:
            call()
        message = str(raised.value)
        assert str(missing) in message and "needs trainA, valA and valB" in message and "fix:" in message
        assert "\n" not in message
    require_split(root / spec.COGENT_DIRNAME, "trainA")  # the others are still there


# ---------------------------------------------------------------------------------- the generated world


def test_generated_cogent_world_has_the_real_layout_and_sizes(cogent_root: Path) -> None:
    assert sorted(p.name for p in cogent_root.iterdir()) == [spec.COGENT_DIRNAME, "clbench_synth.json"]
    clevr_dir = cogent_root / spec.COGENT_DIRNAME
    sizes = split_sizes(TINY, "cogent")
    assert sizes == {"trainA": 40, "valA": 16, "valB": 48, "testA": 8, "testB": 8}
    for split, size in sizes.items():
        names = sorted(p.name for p in (clevr_dir / "images" / split).iterdir())
        assert names == [f"CLEVR_{split}_{i:06d}.png" for i in range(size)]
        has_scenes = (clevr_dir / "scenes" / f"CLEVR_{split}_scenes.json").is_file()
        assert has_scenes == (split not in spec.TEST_SPLITS)
        records = read_clevr_questions(clevr_dir, split)
        answered = split not in spec.TEST_SPLITS
        assert all((r.answer is not None) == answered and (r.program is not None) == answered for r in records)
    manifest = read_manifest(cogent_root)
    assert manifest["world"] == "cogent" and manifest["counts"]["cogent_valB_images"] == 48


def test_generated_cogent_world_keeps_its_conditions_and_its_answers(cogent_root: Path) -> None:
    report = check_dataset(cogent_root)
    assert report.executor_agreement == 1.0 and report.executed > 0
    assert report.condition_share == {"trainA": 1.0, "valA": 1.0, "valB": 1.0}
    clevr_dir = cogent_root / spec.COGENT_DIRNAME
    assert _share_obeying(clevr_dir, "valB", "A") < 0.5  # B really differs from A
    assert _share_obeying(clevr_dir, "trainA", "B") < 0.5
    objects = [o for s in read_clevr_scenes(clevr_dir, "trainA") for o in s["objects"]]
    assert {o["color"] for o in objects if o["shape"] == "sphere"} - set(spec.COGENT_CONDITIONS["A"]["cube"])


def test_generated_cogent_world_is_deterministic_and_complete_only_as_cogent(cogent_root: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", "tiny", seed=0, progress=False, world="cogent")
    assert _files(again) == _files(cogent_root)
    assert is_complete(cogent_root, "tiny", 0, world="cogent")
    assert not is_complete(cogent_root, "tiny", 0)


def test_clevr_world_manifest_has_no_world_key(tiny_root: Path) -> None:
    manifest = read_manifest(tiny_root)
    assert "world" not in manifest
    assert list(manifest) == ["generator", "version", "seed", "preset", "counts"]
    assert is_complete(tiny_root, "tiny", 0) and is_complete(tiny_root, "tiny", 0, world="clevr")
    assert not is_complete(tiny_root, "tiny", 0, world="cogent")


def test_default_cogent_root_has_its_own_folder_and_an_unknown_world_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLBENCH_DATA_HOME", str(tmp_path))
    assert default_data_root("tiny", 3, world="cogent") == tmp_path / "synth-tiny-seed3-cogent"
    assert default_data_root("tiny", 3) == tmp_path / "synth-tiny-seed3"
    with pytest.raises(ConfigError, match="clevr, cogent"):
        generate(tmp_path / "x", "tiny", progress=False, world="humans")
    assert not (tmp_path / "x").exists()
