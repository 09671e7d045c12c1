"""Readers for CLEVR v1.0, CLEVR-CoGenT v1.0 and CLEVR-Humans into small typed records, validating as they read.

Real question files are 100–500 MB, so they are streamed (`clbench.data.json_stream`), one question or scene at
a time.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clbench.core.errors import DataError, ProgramError
from clbench.data import spec
from clbench.data.json_stream import iter_json_array

__all__ = [
    "DatasetRoot",
    "QuestionRecord",
    "detect_release",
    "image_path",
    "image_split",
    "iter_json_array",
    "read_clevr_questions",
    "read_clevr_scenes",
    "read_humans_questions",
    "require_split",
]


_GENERATE_HINT = "`python -m clbench data generate --out DIR` makes a small one"


_IMAGE_NAME = re.compile(rf"^CLEVR_({'|'.join(spec.ALL_SPLITS)})_\d+\.png$")


_ANSWER_SET = frozenset(spec.ANSWERS)


@dataclass(frozen=True, slots=True)
class QuestionRecord:
    """One question, compact: repeated strings are interned and programs are tuples of shared nodes.

    Program nodes are plain dicts (``function``, ``inputs``, ``value_inputs``) with tuple values; identical
    nodes are shared between questions to save memory, so treat them as read-only.
    """

    question: str
    answer: str | None
    image_filename: str
    image_index: int
    image_split: str
    question_index: int
    question_type: str | None
    program: tuple[dict, ...] | None
    question_family_index: int | None


@dataclass(frozen=True)
class DatasetRoot:
    """Where a dataset lives: the folder holding ``CLEVR_v1.0/`` (or ``CLEVR_CoGenT_v1.0/``) and, optionally,
    ``CLEVR-Humans/`` (only beside CLEVR v1.0, whose images its questions ask about)."""

    root: Path
    clevr: Path
    humans: Path | None

    @classmethod
    def locate(cls, path: Path | str, clevr_dirname: str = spec.CLEVR_DIRNAME) -> DatasetRoot:
        """Accept a dataset root (as the downloads unpack) or a lone ``clevr_dirname`` folder."""
        path = Path(path).expanduser()
        cogent = clevr_dirname == spec.COGENT_DIRNAME
        what = f"a folder holding {clevr_dirname}/ (questions/, scenes/, images/)"
        if not cogent:
            what += f" and optionally {spec.HUMANS_DIRNAME}/"
        hint = _generate_hint(clevr_dirname)
        if path.is_file():
            raise DataError(f"dataset folder {path} is a file", f"point to {what}; {hint}")
        if not path.is_dir():
            raise DataError(f"dataset folder {path} does not exist", f"point to {what}; {hint}")
        _require_readable(path)
        if (path / clevr_dirname).is_dir():
            humans = path / spec.HUMANS_DIRNAME
            found = cls(root=path, clevr=path / clevr_dirname, humans=None if cogent or not humans.is_dir() else humans)
        elif (path / "questions").is_dir() or path.name == clevr_dirname:
            found = cls(root=path, clevr=path, humans=None)
        else:
            raise DataError(f"{path} holds no {clevr_dirname}/ folder", f"point to {what}; {hint}")
        questions = found.clevr / "questions"
        for folder in (found.clevr, questions, found.humans):
            _require_readable(folder)
        if not questions.is_dir() or not any(questions.glob("CLEVR_*_questions.json")):
            raise DataError(
                f"{found.clevr} has no questions/CLEVR_<split>_questions.json",
                f"point to {what}; {hint}",
            )
        return found


def _require_readable(folder: Path | None) -> None:
    """A dataset folder this user may not list or enter is refused by name, before a reader meets it."""
    if folder is None or not folder.is_dir() or os.access(folder, os.R_OK | os.X_OK):
        return
    raise DataError(
        f"dataset folder {folder} cannot be read (permission denied)",
        f"make it readable (chmod -R u+rX {folder}) or point to another copy",
    )


def _generate_hint(clevr_dirname: str) -> str:
    if clevr_dirname == spec.COGENT_DIRNAME:
        return "`python -m clbench data generate --world cogent --out DIR` makes a small one"
    return _GENERATE_HINT


def _release(split: str) -> str:
    """The folder a split ships in, for messages that say what to unpack."""
    return spec.COGENT_DIRNAME if split in spec.COGENT_SPLITS else spec.CLEVR_DIRNAME


def detect_release(path: Path | str) -> str:
    """``CLEVR_CoGenT_v1.0`` for a root holding only that folder, or for that folder itself (also when its
    question files name CoGenT splits only); ``CLEVR_v1.0`` otherwise."""
    path = Path(path).expanduser()
    _require_readable(path)
    if (path / spec.CLEVR_DIRNAME).is_dir():
        return spec.CLEVR_DIRNAME
    if (path / spec.COGENT_DIRNAME).is_dir() or path.name == spec.COGENT_DIRNAME:
        return spec.COGENT_DIRNAME
    found = {p.name.removeprefix("CLEVR_").removesuffix("_questions.json") for p in path.glob("questions/*.json")}
    return spec.COGENT_DIRNAME if found and found <= set(spec.COGENT_SPLITS) else spec.CLEVR_DIRNAME


def require_split(clevr_dir: Path, split: str) -> None:
    """Fail early, in one line, when a split the run needs is absent: questions, images and (outside the
    test splits) scenes."""
    _check_split(split)
    clevr_dir = Path(clevr_dir)
    needed = [
        clevr_dir / "questions" / f"CLEVR_{split}_questions.json",
        clevr_dir / "images" / split,
    ]
    if split not in spec.TEST_SPLITS:
        needed.append(clevr_dir / "scenes" / f"CLEVR_{split}_scenes.json")
    release = _release(split)
    wanted = "trainA, valA and valB" if release == spec.COGENT_DIRNAME else "train and val"
    kind = "CoGenT" if release == spec.COGENT_DIRNAME else "CLEVR"
    for path in needed:
        if not path.exists():
            raise DataError(
                f"{path} is missing: a {kind} folder needs {wanted}",
                f"unpack {release} again; {_generate_hint(release)}",
            )


def image_split(image_filename: str, *, source: Path | None = None) -> str:
    """The split an image belongs to, from its name (``CLEVR_train_000123.png`` → ``train``)."""
    match = _IMAGE_NAME.match(image_filename)
    if match is None:
        where = f" in {source}" if source else ""
        raise DataError(
            f"image file name {image_filename!r}{where} is not CLEVR_<split>_<index>.png",
            "use CLEVR v1.0 image names (CLEVR_train_000000.png)",
        )
    return match.group(1)


def image_path(clevr_dir: Path, image_filename: str) -> Path:
    """Resolve an image by its name's split prefix, as CLEVR-Humans questions need (they mix splits)."""
    return Path(clevr_dir) / "images" / image_split(image_filename) / image_filename


class _ImageIndex:
    """One directory listing per image split, so checking 700k questions costs no per-question stat."""

    def __init__(self, clevr_dir: Path) -> None:
        self.clevr_dir = clevr_dir
        self.listings: dict[str, frozenset[str]] = {}

    def check(self, filename: str, source: Path, question_index: int) -> None:
        split = image_split(filename, source=source)
        names = self.listings.get(split)
        if names is None:
            folder = self.clevr_dir / "images" / split
            try:
                names = frozenset(os.listdir(folder))
            except FileNotFoundError:
                raise DataError(
                    f"{source} refers to {split} images but {folder} does not exist",
                    "unpack the CLEVR images next to the questions, or pass check_images=False",
                ) from None
            self.listings[split] = names
        if filename not in names:
            raise DataError(
                f"{source} question {question_index} refers to missing image "
                f"{self.clevr_dir / 'images' / split / filename}",
                f"restore the image (unpack {_release(split)} again) or remove the question",
            )


class _Interner:
    """Shares identical program nodes between questions: a real program repeats the same few nodes."""

    def __init__(self) -> None:
        self.nodes: dict[tuple, dict] = {}

    def node(self, raw: Any, source: Path, question_index: int) -> dict:
        if not isinstance(raw, Mapping):
            raise DataError(
                f"{source} question {question_index} has a program node that is not an object",
                "download or generate the file again",
            )
        # The CLEVR generator's raw output says `type`/`side_inputs`; v1.0 says `function`/`value_inputs`.
        function = raw.get("function", raw.get("type"))
        inputs = raw.get("inputs", ())
        values = raw.get("value_inputs", raw.get("side_inputs", ()))
        if not isinstance(function, str) or not isinstance(inputs, list | tuple):
            raise DataError(
                f"{source} question {question_index} has a malformed program node {dict(raw)!r}",
                "each node needs a 'function' name and an 'inputs' list",
            )
        key = (function, tuple(inputs), tuple(values))
        node = self.nodes.get(key)
        if node is None:
            node = {
                "function": sys.intern(function),
                "inputs": key[1],
                "value_inputs": tuple(sys.intern(str(v)) for v in key[2]),
            }
            self.nodes[key] = node
        return node


def _field(raw: Mapping, name: str, kind: type | tuple[type, ...], source: Path, position: int) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(
            f"{source} question {position} has no valid {name!r} (got {value!r})",
            "download or generate the file again",
        )
    return value


def _answer(raw: Mapping, source: Path, position: int) -> str | None:
    answer = raw.get("answer")
    if answer is None:
        return None
    answer = str(answer).strip().lower()
    if answer not in _ANSWER_SET:
        raise DataError(
            f"{source} question {position} has answer {answer!r}, not one of CLEVR's {len(spec.ANSWERS)}",
            f"fix or drop the question; answers must be one of {', '.join(spec.ANSWERS)}",
        )
    return sys.intern(answer)


def _check_split(split: str, known: tuple[str, ...] = spec.ALL_SPLITS) -> None:
    if split not in known:
        raise DataError(f"unknown split {split!r}", f"use one of {', '.join(known)}")


def _question_objects(source: Path, images: _ImageIndex | None) -> Iterator[tuple[int, Mapping, str]]:
    """Each question of a file, checked to be an object naming an image that exists (when `images` is given)."""
    for position, raw in enumerate(iter_json_array(source, "questions")):
        if not isinstance(raw, Mapping):
            raise DataError(f"{source} question {position} is not an object", "download the file again")
        filename = sys.intern(_field(raw, "image_filename", str, source, position))
        if images is not None:
            images.check(filename, source, position)
        yield position, raw, filename


def _record(
    raw: Mapping,
    source: Path,
    position: int,
    filename: str,
    image_index: int,
    question_type: str | None,
    program: tuple[dict, ...] | None,
) -> QuestionRecord:
    family = raw.get("question_family_index")
    return QuestionRecord(
        question=_field(raw, "question", str, source, position),
        answer=_answer(raw, source, position),
        image_filename=filename,
        image_index=image_index,
        image_split=sys.intern(image_split(filename, source=source)),
        question_index=_field({"question_index": position, **raw}, "question_index", int, source, position),
        question_type=question_type,
        program=program,
        question_family_index=int(family) if isinstance(family, int) else None,
    )


def _nonempty(records: list[QuestionRecord], source: Path) -> list[QuestionRecord]:
    if not records:
        raise DataError(f"{source} holds no questions", "download or generate the split again")
    return records


def read_clevr_questions(
    clevr_dir: Path, split: str, *, keep_programs: bool = True, check_images: bool = True
) -> list[QuestionRecord]:
    """Read ``questions/CLEVR_{split}_questions.json`` into records, streaming and validating each question.

    The question type comes from the program (its last function); ``keep_programs=False`` drops the program
    after typing it, which saves most of the memory on the real 700k-question train split.
    """
    from clbench.data.programs import question_type  # the executor's module owns what a type is

    _check_split(split)
    clevr_dir = Path(clevr_dir)
    source = clevr_dir / "questions" / f"CLEVR_{split}_questions.json"
    if not source.is_file():
        raise DataError(f"{source} not found", f"unpack {_release(split)} there; {_generate_hint(_release(split))}")
    images = _ImageIndex(clevr_dir) if check_images else None
    interner = _Interner()
    records: list[QuestionRecord] = []
    for position, raw, filename in _question_objects(source, images):
        program = raw.get("program")
        nodes: tuple[dict, ...] | None = None
        qtype: str | None = None
        if program is not None:
            if not isinstance(program, list) or not program:
                raise DataError(
                    f"{source} question {position} has an empty or malformed program",
                    "download or generate the file again",
                )
            nodes = tuple(interner.node(node, source, position) for node in program)
            try:
                qtype = question_type(nodes)
            except ProgramError as err:
                raise DataError(
                    f"{source} question {position}: {err.problem}", "download or generate the file again"
                ) from None
        index = _field(raw, "image_index", int, source, position)
        records.append(_record(raw, source, position, filename, index, qtype, nodes if keep_programs else None))
    return _nonempty(records, source)


def read_humans_questions(humans_dir: Path, split: str, *, clevr_dir: Path | None = None) -> list[QuestionRecord]:
    """Read ``CLEVR-Humans-{split}.json``: no programs, images named by CLEVR file name (any split).

    Image existence is checked against ``clevr_dir`` when given, since the images live in CLEVR's folder.
    """
    _check_split(split, spec.SPLITS)
    humans_dir = Path(humans_dir)
    source = humans_dir / f"CLEVR-Humans-{split}.json"
    if not source.is_file():
        raise DataError(f"{source} not found", f"unpack CLEVR-Humans there; {_GENERATE_HINT}")
    images = _ImageIndex(Path(clevr_dir)) if clevr_dir is not None else None
    records: list[QuestionRecord] = []
    for position, raw, filename in _question_objects(source, images):
        index = raw.get("image_index")
        if not isinstance(index, int):  # some releases omit it; the file name carries the same number
            index = int(filename.rsplit("_", 1)[1].split(".")[0])
        records.append(_record(raw, source, position, filename, index, None, None))
    return _nonempty(records, source)


def _check_scene(scene: Any, source: Path, position: int) -> None:
    def bad(what: str) -> DataError:
        return DataError(f"{source} scene {position} {what}", "download or generate the scenes file again")

    if not isinstance(scene, Mapping):
        raise bad("is not an object")
    objects = scene.get("objects")
    if not isinstance(objects, Sequence) or isinstance(objects, str):
        raise bad("has no 'objects' list")
    for i, obj in enumerate(objects):
        if not isinstance(obj, Mapping) or any(not isinstance(obj.get(a), str) for a in spec.ATTRIBUTES):
            raise bad(f"object {i} lacks one of {', '.join(spec.ATTRIBUTES)}")
    relations = scene.get("relationships")
    if not isinstance(relations, Mapping):
        raise bad("has no 'relationships' object")
    for name in spec.RELATIONS:
        lists = relations.get(name)
        if not isinstance(lists, Sequence) or len(lists) != len(objects):
            raise bad(f"has relationships[{name!r}] that is not one list per object")


def read_clevr_scenes(clevr_dir: Path, split: str) -> list[dict]:
    """Read ``scenes/CLEVR_{split}_scenes.json`` into a list where ``scenes[i]`` is image ``i``'s scene.

    Only the shape the executor relies on is checked: objects with the four attributes, and every relation
    as one list per object. CLEVR and CoGenT ship no test scenes. CoGenT's README calls the relations
    ``relations`` while its files say ``relationships``: either is read, as ``relationships``.
    """
    _check_split(split)
    source = Path(clevr_dir) / "scenes" / f"CLEVR_{split}_scenes.json"
    if not source.is_file():
        if split == "test":
            fix = "CLEVR has no test scenes; use train or val"
        elif split in spec.TEST_SPLITS:
            fix = "CLEVR-CoGenT has no test scenes; use trainA, valA or valB"
        else:
            fix = f"unpack {_release(split)} again"
        raise DataError(f"{source} not found", fix)
    by_index: dict[int, dict] = {}
    for position, scene in enumerate(iter_json_array(source, "scenes")):
        if isinstance(scene, dict) and "relationships" not in scene and "relations" in scene:
            scene["relationships"] = scene.pop("relations")
        _check_scene(scene, source, position)
        index = scene.get("image_index", position)
        if not isinstance(index, int) or index in by_index:
            raise DataError(
                f"{source} scene {position} has a missing or repeated image_index {index!r}",
                "download or generate the scenes file again",
            )
        by_index[index] = scene
    if not by_index:
        raise DataError(f"{source} holds no scenes", "download or generate the split again")
    if sorted(by_index) != list(range(len(by_index))):
        missing = sorted(set(range(max(by_index) + 1)) - set(by_index))[:5]
        raise DataError(
            f"{source} scenes do not cover image indices 0..{max(by_index)} (missing {missing})",
            "download or generate the scenes file again",
        )
    return [by_index[i] for i in range(len(by_index))]
