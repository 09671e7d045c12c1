"""Property-based fuzzing: the tokenizer and vocabulary, the readers on arbitrary JSON, and the program executor
on random valid programs over random scenes. Whatever the input: a result, or the project's own error."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clbench.core.errors import DataError, ProgramError
from clbench.data import spec
from clbench.data.clevr import read_clevr_questions, read_humans_questions
from clbench.data.programs import execute
from clbench.data.vocab import UNK, Vocabulary, tokenize

FIXTURE = Path(__file__).parent / "fixtures" / "real_clevr"

# --- tokenizer and vocabulary --------------------------------------------------------------------------------


@given(st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_a_vocabulary_built_from_texts_encodes_them_without_unknowns_and_decodes_back(texts: list[str]) -> None:
    token_lists = [tokenize(t) for t in texts]
    vocab = Vocabulary.build(token_lists)
    for tokens in token_lists:
        ids = vocab.encode(tokens)
        assert vocab.token_to_idx[UNK] not in ids[1:-1] or UNK in tokens
        assert vocab.decode(ids) == tokens


@given(st.lists(st.text(max_size=40), max_size=6), st.lists(st.text(max_size=40), max_size=6))
def test_growing_a_vocabulary_never_moves_old_tokens(first: list[str], second: list[str]) -> None:
    base = Vocabulary.build(tokenize(t) for t in first)
    grown = Vocabulary.build((tokenize(t) for t in second), base=base)
    assert all(grown.token_to_idx[t] == i for t, i in base.token_to_idx.items())


# --- readers on arbitrary JSON -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
QUESTION_KEYS = ["question", "answer", "image_filename", "image_index", "split", "program", "question_family_index"]
QUESTION = st.dictionaries(st.sampled_from(QUESTION_KEYS), JSON, max_size=7) | st.fixed_dictionaries(
    {
        "question": st.text(max_size=30),
        "answer": st.sampled_from([*spec.ANSWERS, "maybe", 3, None]),
        "image_filename": st.sampled_from(["CLEVR_train_000000.png", "CLEVR_train_000001.png", "x.png", 7]),
        "image_index": st.integers(-1, 3) | st.text(max_size=3),
        "program": st.just([{"function": "scene", "inputs": [], "value_inputs": []}, {"function": "count"}]) | JSON,
    }
)
DOCUMENT = JSON | st.fixed_dictionaries({"questions": st.lists(QUESTION, max_size=4)}) | st.text(max_size=50)


@pytest.fixture(scope="module")
def root() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="clbench-fuzz-"))
    shutil.copytree(FIXTURE, folder / "root")
    yield folder / "root"
    shutil.rmtree(folder)


def _read_or_data_error(read) -> None:
    try:
        records = read()
    except DataError as err:
        assert err.problem and err.fix and "\n" not in err.one_line()
        return
    assert records and all(r.answer is None or r.answer in spec.ANSWERS for r in records)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(DOCUMENT, st.booleans())
def test_the_clevr_reader_returns_records_or_a_data_error_on_any_json(root: Path, document, raw_text: bool) -> None:
    clevr = root / spec.CLEVR_DIRNAME
    text = document if raw_text and isinstance(document, str) else json.dumps(document)
    (clevr / "questions" / "CLEVR_train_questions.json").write_text(text)
    _read_or_data_error(lambda: read_clevr_questions(clevr, "train"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(DOCUMENT, st.integers(0, 200))
def test_the_humans_reader_returns_records_or_a_data_error_on_any_json(root: Path, document, cut: int) -> None:
    text = json.dumps(document)
    text = text[: len(text) - cut] if cut < len(text) else text  # sometimes truncated, as a broken download is
    (root / spec.HUMANS_DIRNAME / "CLEVR-Humans-train.json").write_text(text)
    humans, clevr = root / spec.HUMANS_DIRNAME, root / spec.CLEVR_DIRNAME
    _read_or_data_error(lambda: read_humans_questions(humans, "train", clevr_dir=clevr))


# --- the executor on random valid programs over random scenes -------------------------------------------------


@st.composite
def scenes(draw) -> dict:
    n = draw(st.integers(0, 6))
    objects = [{name: draw(st.sampled_from(values)) for name, values in spec.ATTRIBUTES.items()} for _ in range(n)]
    relation = st.lists(st.lists(st.integers(0, max(n - 1, 0)), max_size=n, unique=True), min_size=n, max_size=n)
    return {"objects": objects, "relationships": {r: draw(relation) for r in spec.RELATIONS}}


class ProgramBuilder:
    """Type-correct CLEVR programs, built bottom-up: every node gets inputs of the kinds it needs."""

    def __init__(self, draw) -> None:
        self.draw, self.nodes = draw, []

    def add(self, function: str, inputs: list[int], values: list[str] | None = None) -> int:
        self.nodes.append({"function": function, "inputs": inputs, "value_inputs": values or []})
        return len(self.nodes) - 1

    def objects(self, depth: int) -> int:
        choice = self.draw(st.sampled_from(["scene", "filter", "relate", "same", "union", "intersect"]))
        if depth <= 0 or choice == "scene":
            return self.add("scene", [])
        if choice == "filter":
            attribute = self.draw(st.sampled_from(list(spec.ATTRIBUTES)))
            value = self.draw(st.sampled_from(spec.ATTRIBUTES[attribute]))
            return self.add(f"filter_{attribute}", [self.objects(depth - 1)], [value])
        if choice in ("relate", "same"):
            one = self.one(depth - 1)
            if choice == "relate":
                return self.add("relate", [one], [self.draw(st.sampled_from(spec.RELATIONS))])
            return self.add(f"same_{self.draw(st.sampled_from(list(spec.ATTRIBUTES)))}", [one])
        return self.add(choice, [self.objects(depth - 1), self.objects(depth - 1)])

    def one(self, depth: int) -> int:
        return self.add("unique", [self.objects(depth)])

    def answer(self, depth: int) -> tuple[str, str | None]:
        """Adds the final node; returns its function and, for a query, the attribute asked."""
        kind = self.draw(st.sampled_from(["exist", "count", "compare_integer", "query", "compare_attribute"]))
        attribute = self.draw(st.sampled_from(list(spec.ATTRIBUTES)))
        if kind in ("exist", "count"):
            self.add(kind, [self.objects(depth)])
            return kind, None
        if kind == "compare_integer":
            left = self.add("count", [self.objects(depth)])
            right = self.add("count", [self.objects(depth)])
            function = self.draw(st.sampled_from(["equal_integer", "less_than", "greater_than"]))
            self.add(function, [left, right])
            return function, None
        if kind == "query":
            self.add(f"query_{attribute}", [self.one(depth)])
            return "query", attribute
        left = self.add(f"query_{attribute}", [self.one(depth)])
        right = self.add(f"query_{attribute}", [self.one(depth)])
        self.add(f"equal_{attribute}", [left, right])
        return "compare_attribute", None


@st.composite
def programs(draw) -> tuple[list[dict], str, str | None]:
    builder = ProgramBuilder(draw)
    function, attribute = builder.answer(draw(st.integers(0, 3)))
    return builder.nodes, function, attribute


@settings(max_examples=400, deadline=None)
@given(programs(), scenes())
def test_valid_programs_on_any_scene_answer_in_kind_or_are_ill_posed(program, scene: dict) -> None:
    nodes, function, attribute = program
    try:
        answer = execute(nodes, scene)
    except ProgramError as err:
        assert "unique got" in err.problem  # a well-typed program can only fail by asking for "the" object
        return
    if function in ("exist", "equal_integer", "less_than", "greater_than", "compare_attribute"):
        assert answer in ("yes", "no")
    elif function == "count":
        assert answer.isdigit() and int(answer) <= len(scene["objects"])
    else:
        assert answer in spec.ATTRIBUTES[attribute]


@settings(max_examples=200, deadline=None)
@given(programs(), scenes(), st.data())
def test_a_broken_program_raises_program_error_and_nothing_else(program, scene: dict, data) -> None:
    nodes, _, _ = program
    position = data.draw(st.integers(0, len(nodes) - 1))
    key = data.draw(st.sampled_from(["function", "inputs", "value_inputs"]))
    broken = [dict(node) for node in nodes]
    broken[position][key] = data.draw(JSON)
    with contextlib.suppress(ProgramError):  # any other exception fails the test
        execute(broken, scene)
