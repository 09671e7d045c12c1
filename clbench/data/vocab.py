"""Tokenizer and vocabularies: CLEVR's reference tokenisation, a growing question vocabulary, fixed answers.

The question vocabulary grows between experiences (CLEVR-Humans brings new words): old tokens keep their
index so the embedding rows a model already learned stay where they are.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clbench.core.errors import DataError
from clbench.core.paths import replace_atomically
from clbench.data import spec

__all__ = [
    "END",
    "NULL",
    "SPECIALS",
    "START",
    "UNK",
    "AnswerVocabulary",
    "Vocabs",
    "Vocabulary",
    "answer_vocabulary",
    "program_tokens",
    "tokenize",
]

NULL, START, END, UNK = "<NULL>", "<START>", "<END>", "<UNK>"
SPECIALS: tuple[str, ...] = (NULL, START, END, UNK)  # indices 0..3, as in the reference code

_KEEP = str.maketrans({";": " ; ", ",": " , ", "?": None, ".": None})


def tokenize(text: str) -> list[str]:
    """CLEVR's reference tokenisation: lower case, split off ``;`` ``,``, drop ``?`` ``.``, split on spaces.

    Splitting on any whitespace (not just ``" "``) means no empty tokens, whatever the input.
    """
    return str(text).lower().translate(_KEEP).split()


def program_tokens(program: Iterable[Mapping[str, Any]]) -> list[str]:
    """A program as the reference code spells it in prefix order: ``filter_color[red]``, ``scene``, ..."""
    tokens = []
    for node in program:
        values = node.get("value_inputs") or ()
        function = node.get("function", node.get("type"))
        tokens.append(f"{function}[{','.join(values)}]" if values else str(function))
    return tokens


class Vocabulary:
    """Token ↔ index with the four specials first; unknown tokens encode as ``<UNK>``."""

    def __init__(self, token_to_idx: Mapping[str, int], *, source: str = "vocabulary") -> None:
        if any(not isinstance(t, str) or type(i) is not int for t, i in token_to_idx.items()):
            raise DataError(f"{source} must map token strings to integer indices", "rebuild the vocabulary")
        tokens = sorted(token_to_idx, key=token_to_idx.__getitem__)
        if [token_to_idx[t] for t in tokens] != list(range(len(tokens))):
            raise DataError(f"{source} indices are not 0..{len(tokens) - 1} without gaps", "rebuild the vocabulary")
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise DataError(f"{source} does not start with {', '.join(SPECIALS)}", "rebuild the vocabulary")
        self.token_to_idx: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.idx_to_token: list[str] = tokens

    @classmethod
    def build(
        cls, token_lists: Iterable[Sequence[str]], *, min_count: int = 1, base: Vocabulary | None = None
    ) -> Vocabulary:
        """Keep tokens seen ``min_count`` times; with ``base``, grow it without moving any old row.

        New tokens are appended sorted, so the same data always gives the same indices.
        """
        counts = Counter(token for tokens in token_lists for token in tokens)
        known = dict(base.token_to_idx) if base is not None else {t: i for i, t in enumerate(SPECIALS)}
        new = sorted(t for t, n in counts.items() if n >= min_count and t not in known)
        for token in new:
            known[token] = len(known)
        return cls(known)

    def encode(self, tokens: Iterable[str], *, add_start_end: bool = True) -> list[int]:
        unk = self.token_to_idx[UNK]
        ids = [self.token_to_idx.get(t, unk) for t in tokens]
        return [self.token_to_idx[START], *ids, self.token_to_idx[END]] if add_start_end else ids

    def decode(self, ids: Iterable[int], *, keep_specials: bool = False) -> list[str]:
        """Indices back to tokens; ``<NULL>``/``<START>``/``<END>`` are dropped unless asked for."""
        skip = set() if keep_specials else {NULL, START, END}
        tokens = (self.idx_to_token[i] if 0 <= i < len(self.idx_to_token) else UNK for i in ids)
        return [t for t in tokens if t not in skip]

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_idx

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.token_to_idx == other.token_to_idx

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"


class AnswerVocabulary:
    """The 28 answers in :data:`spec.ANSWERS` order, no specials: the classifier's size never changes."""

    def __init__(self) -> None:
        self.idx_to_token: list[str] = list(spec.ANSWERS)
        self.token_to_idx: dict[str, int] = {a: i for i, a in enumerate(spec.ANSWERS)}

    def encode(self, answer: str) -> int:
        try:
            return self.token_to_idx[answer]
        except KeyError:
            raise DataError(
                f"answer {answer!r} is not one of CLEVR's {len(spec.ANSWERS)} answers",
                f"use one of {', '.join(spec.ANSWERS)}",
            ) from None

    def decode(self, index: int) -> str:
        return self.idx_to_token[index]

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_idx

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnswerVocabulary)

    def __repr__(self) -> str:
        return f"AnswerVocabulary({len(self)} answers)"


def answer_vocabulary() -> AnswerVocabulary:
    """The fixed answer vocabulary (index order = :data:`spec.ANSWERS`)."""
    return AnswerVocabulary()


@dataclass
class Vocabs:
    """The three vocabularies saved together, in the reference code's ``vocab.json`` layout."""

    question: Vocabulary
    answer: AnswerVocabulary
    program: Vocabulary

    @classmethod
    def from_records(cls, records: Iterable[Any], *, min_count: int = 1) -> Vocabs:
        """Build from question records (anything with ``.question`` and ``.program``)."""
        questions: list[list[str]] = []
        programs: list[list[str]] = []
        for record in records:
            questions.append(tokenize(record.question))
            if record.program:
                programs.append(program_tokens(record.program))
        return cls(
            question=Vocabulary.build(questions, min_count=min_count),
            answer=answer_vocabulary(),
            program=Vocabulary.build(programs),
        )

    def save(self, path: Path) -> None:
        """Write atomically, so a crash never leaves half a vocabulary for the next run to read."""
        path = Path(path)
        data = {
            "question_token_to_idx": self.question.token_to_idx,
            "program_token_to_idx": self.program.token_to_idx,
            "answer_token_to_idx": self.answer.token_to_idx,
        }
        text = json.dumps(data, indent=1) + "\n"
        replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: Path) -> Vocabs:
        path = Path(path)
        fix = "delete it and build the vocabulary again"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"vocabulary file {path} not found", "build the vocabulary first") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"vocabulary file {path} is corrupt ({err})", fix) from None
        keys = ("question_token_to_idx", "program_token_to_idx", "answer_token_to_idx")
        if not isinstance(data, dict) or any(not isinstance(data.get(k), dict) for k in keys):
            raise DataError(f"vocabulary file {path} lacks one of {', '.join(keys)}", fix)
        answers = data["answer_token_to_idx"]
        if answers != {a: i for i, a in enumerate(spec.ANSWERS)}:
            raise DataError(f"vocabulary file {path} has answers other than CLEVR's 28 in order", fix)
        return cls(
            question=Vocabulary(data["question_token_to_idx"], source=f"{path} question_token_to_idx"),
            answer=answer_vocabulary(),
            program=Vocabulary(data["program_token_to_idx"], source=f"{path} program_token_to_idx"),
        )
