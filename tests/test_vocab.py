"""Tokenizer and vocabularies: the reference tokenisation, growth that keeps old rows, fixed answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clbench.core.errors import DataError
from clbench.data import spec
from clbench.data.clevr import read_clevr_questions
from clbench.data.vocab import (
    SPECIALS,
    UNK,
    Vocabs,
    Vocabulary,
    answer_vocabulary,
    program_tokens,
    tokenize,
)

CLEVR = Path(__file__).parent / "fixtures" / "real_clevr" / spec.CLEVR_DIRNAME


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        (
            "Are there any other things that are the same shape as the big metallic object?",
            [
                "are",
                "there",
                "any",
                "other",
                "things",
                "that",
                "are",
                "the",
                "same",
                "shape",
                "as",
                "the",
                "big",
                "metallic",
                "object",
            ],
        ),
        (
            "There is a small cube; what color is it?",
            ["there", "is", "a", "small", "cube", ";", "what", "color", "is", "it"],
        ),
        ("Red, green,or blue.", ["red", ",", "green", ",", "or", "blue"]),
        ("  spaced\tout\n words ", ["spaced", "out", "words"]),
        ("?.?", []),
        ("", []),
        ("Is the CAFÉ cube there", ["is", "the", "café", "cube", "there"]),
    ],
)
def test_tokenize_follows_the_reference(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


@given(st.text())
def test_tokenize_never_crashes_and_leaves_no_blanks_or_dropped_marks(text: str) -> None:
    tokens = tokenize(text)
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    assert all("?" not in t and "." not in t for t in tokens)
    assert all(t in {";", ","} or not {";", ","} & set(t) for t in tokens)


def test_vocab_starts_with_the_reference_specials() -> None:
    vocab = Vocabulary.build([["b", "a"], ["a"]])
    assert vocab.idx_to_token[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert vocab.token_to_idx == {**{t: i for i, t in enumerate(SPECIALS)}, "a": 4, "b": 5}
    assert len(vocab) == 6 and "a" in vocab and "z" not in vocab


def test_vocab_grows_without_moving_old_rows() -> None:
    clevr = Vocabulary.build([tokenize(q) for q in ["What color is the cube?", "How many spheres?"]])
    humans = [tokenize(q) for q in ["What colour is the ball?", "colour of the ball", "ball ball zebra"]]
    grown = Vocabulary.build(humans, min_count=2, base=clevr)
    for token, index in clevr.token_to_idx.items():
        assert grown.token_to_idx[token] == index
    # new words seen ≥ 2 times are appended in sorted order; "zebra" (once) stays unknown
    assert grown.idx_to_token[len(clevr) :] == ["ball", "colour"]
    assert "zebra" not in grown
    assert grown.encode(["zebra"], add_start_end=False) == [grown.token_to_idx[UNK]]
    # growing again with the same data is a no-op, and growth is deterministic
    assert Vocabulary.build(humans, min_count=2, base=grown) == grown
    assert Vocabulary.build(list(reversed(humans)), min_count=2, base=clevr) == grown


def test_encode_decode_roundtrip_with_unknowns() -> None:
    vocab = Vocabulary.build([["is", "there", "a", "cube"]])
    ids = vocab.encode(["is", "there", "a", "wug"])
    assert ids[0] == 1 and ids[-1] == 2
    assert vocab.decode(ids) == ["is", "there", "a", UNK]
    assert vocab.decode(ids, keep_specials=True)[0] == "<START>"
    assert vocab.encode([], add_start_end=False) == []


def test_answer_order_is_exactly_the_28_answers() -> None:
    answers = answer_vocabulary()
    assert len(answers) == 28
    assert answers.idx_to_token == list(spec.ANSWERS)
    assert [answers.encode(a) for a in spec.ANSWERS] == list(range(28))
    assert answers.decode(0) == "yes"
    with pytest.raises(DataError, match="'maybe' is not one of CLEVR's 28 answers"):
        answers.encode("maybe")


def test_program_tokens_follow_the_reference_spelling() -> None:
    program = read_clevr_questions(CLEVR, "train")[0].program
    assert program_tokens(program)[:3] == ["scene", "filter_size[large]", "filter_material[metal]"]


def test_vocabs_save_load_roundtrip(tmp_path: Path) -> None:
    vocabs = Vocabs.from_records(read_clevr_questions(CLEVR, "train"))
    path = tmp_path / "vocab.json"
    vocabs.save(path)
    raw = json.loads(path.read_text())
    assert set(raw) == {"question_token_to_idx", "program_token_to_idx", "answer_token_to_idx"}
    assert list(raw["answer_token_to_idx"]) == list(spec.ANSWERS)
    loaded = Vocabs.load(path)
    assert loaded == vocabs
    assert "metallic" in loaded.question and "filter_size[large]" in loaded.program
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


@pytest.mark.parametrize(
    "content",
    [
        '{"question_token_to_idx": {"<NULL>": 0',  # truncated
        "not json",
        '{"question_token_to_idx": {}}',  # keys missing
        '{"question_token_to_idx": {"<NULL>": 0, "a": 5}, "program_token_to_idx": {},'
        ' "answer_token_to_idx": {}}',  # gaps, no specials
        "\udcff",
    ],
)
def test_loading_a_corrupt_vocab_is_a_data_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(DataError, match=r"vocab\.json"):
        Vocabs.load(path)


def test_loading_a_vocab_with_gaps_is_a_data_error(tmp_path: Path) -> None:
    vocabs = Vocabs.from_records(read_clevr_questions(CLEVR, "train"))
    path = tmp_path / "vocab.json"
    vocabs.save(path)
    raw = json.loads(path.read_text())
    raw["question_token_to_idx"]["cube"] = 999
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="question_token_to_idx indices are not"):
        Vocabs.load(path)
