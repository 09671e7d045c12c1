"""``clbench data check``: read a whole dataset, run every program on its scene, and summarise what is there.

Running the executor over every question is the strongest check we have that a folder (real or generated)
means what its answers say: the executor and the recorded answers must agree on 100 % of questions. For
CLEVR-CoGenT it also counts the scenes that keep to their split's condition (A for trainA/valA, B for valB).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clbench.core.errors import ProgramError
from clbench.data import spec
from clbench.data.clevr import (
    DatasetRoot,
    QuestionRecord,
    detect_release,
    read_clevr_questions,
    read_clevr_scenes,
    read_humans_questions,
    require_split,
)
from clbench.data.vocab import Vocabulary, tokenize

__all__ = ["CheckReport", "Mismatch", "check_dataset"]

_HUMANS_MIN_COUNT = 5  # the FiLM reference grows the vocabulary with CLEVR-Humans words seen ≥ 5 times
_MAX_MISMATCHES = 10
_NO_PROGRAM = "no program"  # the count column of questions without a program, hence without a type


@dataclass(frozen=True)
class Mismatch:
    """A question whose recorded answer differs from what its program gives on its scene."""

    split: str
    question_index: int
    question: str
    recorded: str | None
    executed: str  # the executor's answer, or "error: ..." when the program could not run

    def __str__(self) -> str:
        where = f"{self.split} #{self.question_index}"
        return f"{where}: {self.question!r} recorded {self.recorded!r}, got {self.executed!r}"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found; ``render()`` makes the short table ``clbench data check`` prints."""

    root: DatasetRoot
    counts: pd.DataFrame  # rows: dataset/split; columns: question types, no program, total
    answer_balance: pd.Series  # per question type: share of its most common answer
    question_vocab_size: int
    grown_vocab_size: int | None  # after growing with CLEVR-Humans train words (None without humans)
    executed: int = 0
    agreed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    mismatch_count: int = 0
    release: str = spec.CLEVR_DIRNAME  # or spec.COGENT_DIRNAME
    condition_share: dict[str, float] = field(default_factory=dict)  # CoGenT split → share obeying its condition
    scene_counts: dict[str, int] = field(default_factory=dict)  # CoGenT split → scenes behind that share

    @property
    def executor_agreement(self) -> float:
        """Share of executed questions whose answer the executor gives back (1.0 = 100 %; nan if none)."""
        return self.agreed / self.executed if self.executed else math.nan

    def render(self) -> str:
        lines = [
            f"dataset: {self.root.root}",
            "",
            "questions per split and type:",
            self.counts.to_string(),
            "",
        ]
        if len(self.answer_balance):
            balance = (self.answer_balance * 100).map("{:.1f} %".format)
            lines += ["share of the most common answer, per type:", balance.to_string(), ""]
        train = "CoGenT trainA" if self.release == spec.COGENT_DIRNAME else "CLEVR train"
        vocab = f"question vocabulary: {self.question_vocab_size} tokens ({train})"
        if self.grown_vocab_size is not None:
            vocab += f", {self.grown_vocab_size} after CLEVR-Humans words seen ≥ {_HUMANS_MIN_COUNT} times"
        lines.append(vocab)
        if self.executed:
            lines.append(
                f"executor agreement: {self.executor_agreement * 100:.2f} % "
                f"({self.agreed}/{self.executed} questions with a program and a scene)"
            )
        else:
            lines.append("executor agreement: n/a (no question has both a program and a scene)")
        for split, share in self.condition_share.items():
            lines.append(
                f"condition: {split} {share * 100:.1f} % of {self.scene_counts[split]} scenes obey "
                f"{spec.condition_of(split)}"
            )
        if self.mismatches:
            lines.append(f"first mismatches ({self.mismatch_count} in all):")
            lines += [f"  {m}" for m in self.mismatches]
        return "\n".join(lines)


def _type_counts(records: list[QuestionRecord]) -> dict[str, int]:
    counts = Counter(r.question_type or _NO_PROGRAM for r in records)
    row = {t: counts.get(t, 0) for t in (*spec.QUESTION_TYPES, _NO_PROGRAM)}
    row["total"] = len(records)
    return row


@dataclass
class _Tally:
    """What checking the splits one after another adds up."""

    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    answers_by_type: dict[str, Counter[str]] = field(default_factory=dict)
    train_tokens: list[list[str]] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    condition_share: dict[str, float] = field(default_factory=dict)
    scene_counts: dict[str, int] = field(default_factory=dict)
    executed: int = 0
    agreed: int = 0
    mismatch_count: int = 0


def check_dataset(path: Path, *, clevr_dirname: str | None = None) -> CheckReport:
    """Validate a dataset root (or a lone ``CLEVR_v1.0/``) through the readers and execute every program.

    ``clevr_dirname`` names the release to read; by default a root holding ``CLEVR_CoGenT_v1.0/`` and no
    ``CLEVR_v1.0/`` is read as CoGenT, which must have trainA, valA and valB. Malformed files raise
    :class:`clbench.core.errors.DataError` from the readers; disagreements between programs and answers, and
    scenes outside their condition, do not raise: they are counted in the report.
    """
    clevr_dirname = clevr_dirname or detect_release(path)
    root = DatasetRoot.locate(path, clevr_dirname)
    cogent = clevr_dirname == spec.COGENT_DIRNAME
    if cogent:
        splits, label, train, val = spec.COGENT_SPLITS, "CoGenT", "trainA", "valA"
        for split in ("trainA", "valA", "valB"):
            require_split(root.clevr, split)
    else:
        splits, label, train, val = spec.SPLITS, "CLEVR", "train", "val"
    tally = _Tally()
    for split in splits:
        if (root.clevr / "questions" / f"CLEVR_{split}_questions.json").is_file():
            records = _check_split(tally, root, split, label, cogent)
            if split == train or (split == val and not tally.train_tokens):  # the vocabulary: train's words
                tally.train_tokens = [tokenize(r.question) for r in records]
    question_vocab = Vocabulary.build(tally.train_tokens)
    grown = _grown_vocab_size(root, question_vocab, tally) if root.humans is not None else None
    counts = pd.DataFrame.from_dict(tally.rows, orient="index").fillna(0).astype(int)
    if not counts.empty and not counts[_NO_PROGRAM].any():
        counts = counts.drop(columns=_NO_PROGRAM)
    types = spec.QUESTION_TYPES
    most = {t: c.most_common(1)[0][1] / sum(c.values()) for t in types if (c := tally.answers_by_type.get(t))}
    return CheckReport(
        root=root,
        counts=counts,
        answer_balance=pd.Series(most, dtype=float, name="most common answer"),
        question_vocab_size=len(question_vocab),
        grown_vocab_size=grown,
        executed=tally.executed,
        agreed=tally.agreed,
        mismatches=tally.mismatches,
        mismatch_count=tally.mismatch_count,
        release=clevr_dirname,
        condition_share=tally.condition_share,
        scene_counts=tally.scene_counts,
    )


def _check_split(tally: _Tally, root: DatasetRoot, split: str, label: str, cogent: bool) -> list[QuestionRecord]:
    """One CLEVR split: its type counts, its scenes' conditions (CoGenT), every program run on its scene."""
    records = read_clevr_questions(root.clevr, split)
    tally.rows[f"{label} {split}"] = _type_counts(records)
    scenes_file = root.clevr / "scenes" / f"CLEVR_{split}_scenes.json"
    scenes = read_clevr_scenes(root.clevr, split) if scenes_file.is_file() else None
    if cogent and scenes is not None and (condition := spec.condition_of(split)):
        tally.condition_share[split] = sum(spec.obeys(s["objects"], condition) for s in scenes) / len(scenes)
        tally.scene_counts[split] = len(scenes)
    for record in records:
        if record.answer is not None and record.question_type is not None:
            tally.answers_by_type.setdefault(record.question_type, Counter())[record.answer] += 1
        if record.program is not None and scenes is not None and record.answer is not None:
            _execute(tally, split, record, scenes)
    return records


def _execute(tally: _Tally, split: str, record: QuestionRecord, scenes: list[dict]) -> None:
    """Run one question's program on its scene and count whether it gives the recorded answer."""
    from clbench.data.programs import execute  # imported here: the executor is the heaviest check

    if not 0 <= record.image_index < len(scenes):
        got = f"error: image_index {record.image_index} has no scene"
    else:
        try:
            got = execute(record.program, scenes[record.image_index])
        except ProgramError as err:
            got = f"error: {err.problem}"
    tally.executed += 1
    if got == record.answer:
        tally.agreed += 1
        return
    tally.mismatch_count += 1
    if len(tally.mismatches) < _MAX_MISMATCHES:
        tally.mismatches.append(Mismatch(split, record.question_index, record.question, record.answer, got))


def _grown_vocab_size(root: DatasetRoot, question_vocab: Vocabulary, tally: _Tally) -> int:
    """The vocabulary once CLEVR-Humans train's words are added (and each Humans split's type counts)."""
    humans_train_tokens: list[list[str]] = []
    for split in spec.SPLITS:
        if not (root.humans / f"CLEVR-Humans-{split}.json").is_file():
            continue
        records = read_humans_questions(root.humans, split, clevr_dir=root.clevr)
        tally.rows[f"Humans {split}"] = _type_counts(records)
        if split == "train":
            humans_train_tokens = [tokenize(r.question) for r in records]
    return len(Vocabulary.build(humans_train_tokens, min_count=_HUMANS_MIN_COUNT, base=question_vocab))
