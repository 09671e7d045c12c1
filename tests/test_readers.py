"""The CLEVR v1.0 / CLEVR-Humans readers: real formats read right, every malformed input named in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clbench.core.errors import DataError
from clbench.data import json_stream, spec
from clbench.data.clevr import (
    DatasetRoot,
    QuestionRecord,
    image_path,
    iter_json_array,
    read_clevr_questions,
    read_clevr_scenes,
    read_humans_questions,
)

FIXTURE = Path(__file__).parent / "fixtures" / "real_clevr"
CLEVR = FIXTURE / spec.CLEVR_DIRNAME
HUMANS = FIXTURE / spec.HUMANS_DIRNAME


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture root, for the tests that break it."""
    shutil.copytree(FIXTURE, tmp_path / "root")
    return tmp_path / "root"


def _questions_file(root: Path, split: str = "train") -> Path:
    return root / spec.CLEVR_DIRNAME / "questions" / f"CLEVR_{split}_questions.json"


def test_fixture_questions_read_into_typed_records() -> None:
    records = read_clevr_questions(CLEVR, "train")
    assert len(records) == 6
    first = records[0]
    assert isinstance(first, QuestionRecord)
    assert first.question == "Are there any other things that are the same shape as the big metallic object?"
    assert first.answer == "yes"
    assert first.image_filename == "CLEVR_train_000000.png"
    assert (first.image_index, first.image_split, first.question_index) == (0, "train", 0)
    assert first.question_type == "exist"
    assert first.question_family_index == 39
    assert isinstance(first.program, tuple)
    assert [n["function"] for n in first.program] == [
        "scene",
        "filter_size",
        "filter_material",
        "unique",
        "same_shape",
        "exist",
    ]
    assert first.program[1]["value_inputs"] == ("large",) and first.program[1]["inputs"] == (0,)
    assert [r.question_type for r in records] == [
        "exist",
        "count",
        "query_attribute",
        "compare_integer",
        "compare_attribute",
        "compare_integer",
    ]
    assert {r.question_type for r in read_clevr_questions(CLEVR, "val")} <= set(spec.QUESTION_TYPES)


def test_identical_program_nodes_are_shared_between_questions() -> None:
    records = read_clevr_questions(CLEVR, "train")
    assert records[0].program[0] is records[1].program[0]  # both "scene"


def test_keep_programs_false_still_types_questions() -> None:
    records = read_clevr_questions(CLEVR, "train", keep_programs=False)
    assert all(r.program is None for r in records)
    assert records[0].question_type == "exist"


def test_test_split_has_no_answers_programs_or_types() -> None:
    records = read_clevr_questions(CLEVR, "test")
    assert len(records) == 2
    assert all(r.answer is None and r.program is None and r.question_type is None for r in records)
    assert records[0].image_split == "test"


def test_scenes_are_indexed_by_image_index() -> None:
    scenes = read_clevr_scenes(CLEVR, "train")
    assert [s["image_index"] for s in scenes] == [0, 1]
    assert scenes[0]["objects"][0]["shape"] == "cube"
    assert len(scenes[0]["objects"][0]["3d_coords"]) == 3
    assert set(scenes[0]["relationships"]) == {"left", "right", "front", "behind"}


def test_no_test_scenes_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"CLEVR_test_scenes\.json"):
        read_clevr_scenes(CLEVR, "test")


def test_humans_questions_resolve_images_by_file_name() -> None:
    records = read_humans_questions(HUMANS, "train", clevr_dir=CLEVR)
    assert len(records) == 3
    assert all(r.program is None and r.question_type is None for r in records)
    assert records[1].image_filename == "CLEVR_train_000001.png" and records[1].image_index == 1
    assert records[1].answer == "2"
    assert read_humans_questions(HUMANS, "val")[0].image_split == "val"


def test_image_path_uses_the_split_prefix() -> None:
    assert image_path(CLEVR, "CLEVR_val_000000.png") == CLEVR / "images" / "val" / "CLEVR_val_000000.png"
    assert image_path(CLEVR, "CLEVR_val_000000.png").is_file()
    with pytest.raises(DataError, match=r"CLEVR_<split>_<index>\.png"):
        image_path(CLEVR, "photo.png")


def test_locate_accepts_a_root_or_a_lone_clevr_folder(tmp_path: Path) -> None:
    root = DatasetRoot.locate(FIXTURE)
    assert (root.clevr, root.humans) == (CLEVR, HUMANS)
    lone = DatasetRoot.locate(CLEVR)
    assert (lone.clevr, lone.humans) == (CLEVR, None)
    shutil.copytree(CLEVR, tmp_path / spec.CLEVR_DIRNAME)
    only_clevr = DatasetRoot.locate(tmp_path)
    assert only_clevr.humans is None
    assert len(read_clevr_questions(only_clevr.clevr, "train")) == 6


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_locate_a_missing_or_empty_folder_says_what_it_needs(tmp_path: Path, make: str) -> None:
    target = tmp_path / "nowhere"
    if make == "empty":
        target.mkdir()
    with pytest.raises(DataError) as err:
        DatasetRoot.locate(target)
    message = str(err.value)
    assert str(target) in message and spec.CLEVR_DIRNAME in message
    assert "python -m clbench data generate --out DIR" in message
    assert "\n" not in message


def test_missing_questions_file_names_it(copy: Path) -> None:
    _questions_file(copy).unlink()
    with pytest.raises(DataError, match=r"CLEVR_train_questions\.json not found"):
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train")


def test_malformed_json_names_file_and_line(copy: Path) -> None:
    path = _questions_file(copy)
    pretty = json.dumps(json.loads(path.read_text()), indent=1)
    broken = pretty.replace('"answer": "3"', '"answer": 3 3', 1)
    path.write_text(broken)
    with pytest.raises(DataError) as err:
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train")
    line = broken[: broken.index("3 3")].count("\n") + 1
    assert "CLEVR_train_questions.json" in str(err.value)
    assert f"line {line}," in str(err.value)


def test_truncated_json_names_file_and_offset(copy: Path) -> None:
    path = _questions_file(copy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"CLEVR_train_questions\.json is not valid JSON: .* at line 1, byte \d+"):
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train")


def test_missing_image_names_question_and_image(copy: Path) -> None:
    (copy / spec.CLEVR_DIRNAME / "images" / "train" / "CLEVR_train_000001.png").unlink()
    with pytest.raises(DataError, match=r"CLEVR_train_questions\.json question 3 .*CLEVR_train_000001\.png"):
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train")
    assert len(read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train", check_images=False)) == 6


def test_missing_image_from_humans_is_caught_when_clevr_is_given(copy: Path) -> None:
    (copy / spec.CLEVR_DIRNAME / "images" / "val" / "CLEVR_val_000000.png").unlink()
    humans = copy / spec.HUMANS_DIRNAME
    with pytest.raises(DataError, match=r"CLEVR-Humans-val\.json question 0 .*CLEVR_val_000000\.png"):
        read_humans_questions(humans, "val", clevr_dir=copy / spec.CLEVR_DIRNAME)
    assert len(read_humans_questions(humans, "val")) == 2


@pytest.mark.parametrize("reader", ["clevr", "humans"])
def test_answer_outside_the_28_names_file(copy: Path, reader: str) -> None:
    humans = copy / spec.HUMANS_DIRNAME / "CLEVR-Humans-val.json"
    path = _questions_file(copy, "val") if reader == "clevr" else humans
    data = json.loads(path.read_text())
    data["questions"][1]["answer"] = "maybe"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"{path.name} question 1 has answer 'maybe'"):
        if reader == "clevr":
            read_clevr_questions(copy / spec.CLEVR_DIRNAME, "val")
        else:
            read_humans_questions(copy / spec.HUMANS_DIRNAME, "val")


def test_humans_answers_are_normalised_to_the_answer_set(copy: Path) -> None:
    path = copy / spec.HUMANS_DIRNAME / "CLEVR-Humans-train.json"
    data = json.loads(path.read_text())
    data["questions"][0]["answer"] = " Yes "
    path.write_text(json.dumps(data))
    assert read_humans_questions(copy / spec.HUMANS_DIRNAME, "train")[0].answer == "yes"


def test_program_of_unknown_type_names_file_and_question(copy: Path) -> None:
    path = _questions_file(copy, "val")
    data = json.loads(path.read_text())
    data["questions"][2]["program"][-1]["function"] = "teleport"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"CLEVR_val_questions\.json question 2"):
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "val")


def test_empty_split_names_file(copy: Path) -> None:
    path = _questions_file(copy, "val")
    path.write_text(json.dumps({"info": {}, "questions": []}))
    with pytest.raises(DataError, match=r"CLEVR_val_questions\.json holds no questions"):
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "val")


def test_file_without_the_questions_array_names_file(copy: Path) -> None:
    path = _questions_file(copy, "val")
    path.write_text(json.dumps({"info": {}}))
    with pytest.raises(DataError, match=r"CLEVR_val_questions\.json has no top-level 'questions' array"):
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "val")


def test_scene_without_objects_names_file(copy: Path) -> None:
    path = copy / spec.CLEVR_DIRNAME / "scenes" / "CLEVR_val_scenes.json"
    data = json.loads(path.read_text())
    del data["scenes"][0]["objects"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"CLEVR_val_scenes\.json scene 0 has no 'objects' list"):
        read_clevr_scenes(copy / spec.CLEVR_DIRNAME, "val")


def _as_loaded(path: Path) -> list[tuple]:
    """What json.load gives, in the records' terms."""
    out = []
    for q in json.loads(path.read_text())["questions"]:
        program = tuple((n["function"], tuple(n["inputs"]), tuple(n["value_inputs"])) for n in q["program"])
        out.append((q["question"], q["answer"], q["image_filename"], q["image_index"], program))
    return out


def _as_read(records: list[QuestionRecord]) -> list[tuple]:
    return [
        (
            r.question,
            r.answer,
            r.image_filename,
            r.image_index,
            tuple((n["function"], n["inputs"], n["value_inputs"]) for n in r.program or ()),
        )
        for r in records
    ]


@pytest.mark.parametrize("chunk", [1, 7, 100])
@pytest.mark.parametrize("indent", [None, 2])
def test_streaming_matches_json_load_across_chunk_boundaries(
    copy: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, indent: int | None
) -> None:
    path = _questions_file(copy)
    data = json.loads(path.read_text())
    data["info"]["count"] = -12345.5e-3  # a number and literals the chunk edge can cut
    data["info"]["flags"] = [True, False, None, "caf\u00e9 \\ \u2603"]
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=chunk == 7))
    monkeypatch.setattr(json_stream, "CHUNK_CHARS", chunk)
    assert path.stat().st_size > chunk
    assert _as_read(read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train")) == _as_loaded(path)
    assert list(iter_json_array(path, "questions")) == data["questions"]


def test_streaming_a_file_larger_than_one_chunk(copy: Path) -> None:
    path = _questions_file(copy)
    data = json.loads(path.read_text())
    data["questions"] = data["questions"] * 400  # ≈ 1.8 MB, more than the 1 Mi-character chunk
    for k, q in enumerate(data["questions"]):
        q["question_index"] = k
    path.write_text(json.dumps(data))
    assert path.stat().st_size > json_stream.CHUNK_CHARS
    records = read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train")
    assert _as_read(records) == _as_loaded(path)
    assert records[-1].question_index == len(data["questions"]) - 1


def test_truncated_large_file_reports_a_byte_offset_past_the_first_chunk(copy: Path) -> None:
    path = _questions_file(copy)
    data = json.loads(path.read_text())
    data["questions"] = data["questions"] * 400
    text = json.dumps(data)
    path.write_text(text[: len(text) - 5000])
    with pytest.raises(DataError) as err:
        read_clevr_questions(copy / spec.CLEVR_DIRNAME, "train")
    byte = int(str(err.value).split("byte ")[1].split()[0])
    assert json_stream.CHUNK_CHARS < byte <= len(text) - 5000
