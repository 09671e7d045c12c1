"""CLEVR → CLEVR-Humans as an Avalanche benchmark: two training experiences, one test stream.

train stream: [CLEVR train, CLEVR-Humans train subsampled to `fraction`]
test stream:  [CLEVR val,   CLEVR-Humans test]   (CLEVR's test split has no answers: results are on val)

Every sample carries its question type (a data attribute returned in the minibatch, for per-type metrics)
and the largest token index its question uses (so the model's embedding can grow to fit each experience).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset
from torch.utils.data import Dataset

from clbench.data.cache import ImageCache, build_image_cache
from clbench.data.clevr import (
    DatasetRoot,
    QuestionRecord,
    read_clevr_questions,
    read_humans_questions,
)
from clbench.data.inputs import FiLMInput
from clbench.data.scene_maps import SceneMaps, build_scene_maps
from clbench.data.spec import QUESTION_TYPES
from clbench.data.vocab import AnswerVocabulary, Vocabulary, answer_vocabulary, tokenize
from clbench.errors import DataError

NAME = "clevr-humans"
EXPERIENCES: tuple[str, ...] = ("CLEVR", "CLEVR-Humans")
HUMANS_TYPE = "humans"  # CLEVR-Humans has no programs, so its questions have no CLEVR type
TYPE_NAMES: tuple[str, ...] = (*QUESTION_TYPES, HUMANS_TYPE)


class QuestionAnswerDataset(Dataset):
    """Questions over a memory-mapped image cache (or scene maps); items are `(FiLMInput, answer_index)`."""

    def __init__(
        self,
        images: ImageCache | SceneMaps,
        rows: np.ndarray,
        questions: np.ndarray,
        lengths: np.ndarray,
        answers: np.ndarray,
    ) -> None:
        self.images, self.rows, self.questions, self.lengths, self.answers = (
            images,
            rows,
            questions,
            lengths,
            answers,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[FiLMInput, int]:
        image = torch.from_numpy(np.array(self.images.array[self.rows[i]])).permute(2, 0, 1)
        inputs = FiLMInput(image, torch.from_numpy(self.questions[i]), torch.tensor(int(self.lengths[i])))
        return inputs, int(self.answers[i])


@dataclass
class EncodedSplit:
    """One split's questions as arrays, ready to become a dataset."""

    name: str
    records: list[QuestionRecord]
    tokens: list[list[int]]
    answers: np.ndarray
    types: np.ndarray

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class ClevrHumansScenario:
    """The benchmark plus what the model, metrics and reports need to know about it."""

    benchmark: object  # avalanche CLScenario with train_stream and test_stream
    vocab: Vocabulary  # grown: CLEVR words first, then CLEVR-Humans words
    clevr_vocab_size: int
    answers: AnswerVocabulary
    fingerprint: str
    sizes: dict[str, int]
    majority_baseline: dict[str, float]  # per test experience: accuracy of always answering the train majority
    type_names: tuple[str, ...] = TYPE_NAMES
    experience_names: tuple[str, ...] = EXPERIENCES
    test_types: list[np.ndarray] = field(default_factory=list)
    train_datasets: list[QuestionAnswerDataset] = field(default_factory=list)  # plain PyTorch, for benchmarks
    test_datasets: list[QuestionAnswerDataset] = field(default_factory=list)

    @property
    def train_stream(self):
        return self.benchmark.train_stream  # type: ignore[attr-defined]

    @property
    def test_stream(self):
        return self.benchmark.test_stream  # type: ignore[attr-defined]


def subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded `fraction` of `n` items; smaller fractions are subsets of larger ones."""
    keep = max(1, math.ceil(fraction * n))
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


def _encode(name: str, records: list[QuestionRecord], vocab: Vocabulary, answers: AnswerVocabulary) -> EncodedSplit:
    tokens = [vocab.encode(tokenize(r.question)) for r in records]
    answer_ids = np.array([answers.encode(r.answer) for r in records], dtype=np.int64)  # type: ignore[arg-type]
    types = np.array(
        [TYPE_NAMES.index(r.question_type or HUMANS_TYPE) for r in records],
        dtype=np.int64,
    )
    return EncodedSplit(name, records, tokens, answer_ids, types)


def _pad(tokens: Sequence[Sequence[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(tokens), width), dtype=np.int64)
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    for i, t in enumerate(tokens):
        out[i, : len(t)] = t
    return out, lengths


def _to_torch(split: EncodedSplit, images: ImageCache | SceneMaps, width: int) -> QuestionAnswerDataset:
    rows = np.array([images.index[r.image_filename] for r in split.records], dtype=np.int64)
    questions, lengths = _pad(split.tokens, width)
    return QuestionAnswerDataset(images, rows, questions, lengths, split.answers)


def _to_avalanche(split: EncodedSplit, base: QuestionAnswerDataset, task_label: int) -> ClassificationDataset:
    return ClassificationDataset(
        [base],
        data_attributes=[
            DataAttribute(split.answers.tolist(), "targets"),
            DataAttribute(split.types.tolist(), "question_type", use_in_getitem=True),
            DataAttribute(base.questions.max(axis=1).tolist(), "question_max_token"),
            DataAttribute([task_label] * len(split), "targets_task_labels", use_in_getitem=True),
        ],
    )


def _cap(records: list[QuestionRecord], limit: int | None) -> list[QuestionRecord]:
    """A fixed, seed-independent subset, so every run evaluates on the same questions."""
    if limit is None or len(records) <= limit:
        return records
    return [records[i] for i in subsample(len(records), limit / len(records), seed=12345)[:limit]]


def _fingerprint(root: DatasetRoot, caches: Sequence[ImageCache | SceneMaps]) -> str:
    digest = hashlib.sha256()
    files = sorted((root.clevr / "questions").glob("CLEVR_*_questions.json"))
    if root.humans is not None:
        files += sorted(root.humans.glob("CLEVR-Humans-*.json"))
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 22), b""):
                digest.update(chunk)
    for cache in caches:
        digest.update(cache.fingerprint.encode())
    return digest.hexdigest()[:16]


def _majority(train: EncodedSplit, test: EncodedSplit) -> float:
    most_common = Counter(train.answers.tolist()).most_common(1)[0][0]
    return float((test.answers == most_common).mean())


def build(
    data_root: Path | str,
    *,
    image_size: tuple[int, int],
    fraction: float = 1.0,
    seed: int = 0,
    min_word_count: int = 5,
    max_train_questions: int | None = None,
    max_test_questions: int | None = None,
    scene_maps: bool = False,
    progress: bool = True,
) -> ClevrHumansScenario:
    """Read, tokenise and cache a dataset root, and assemble the two-experience benchmark.

    With `scene_maps`, the model's input is each image's scene graph drawn at `image_size` (the state-description
    front-end) instead of its pixels.
    """
    root = DatasetRoot.locate(data_root)
    if root.humans is None:
        raise DataError(
            f"{root.root} has no CLEVR-Humans/ folder; the scenario fine-tunes on it",
            "unpack CLEVR-Humans beside CLEVR_v1.0/, or use the generated default (omit --data)",
        )
    clevr_train = _cap(read_clevr_questions(root.clevr, "train", keep_programs=True), max_train_questions)
    clevr_val = _cap(read_clevr_questions(root.clevr, "val", keep_programs=True), max_test_questions)
    humans_all = read_humans_questions(root.humans, "train", clevr_dir=root.clevr)
    humans_train = [humans_all[i] for i in subsample(len(humans_all), fraction, seed)]
    humans_test = _cap(read_humans_questions(root.humans, "test", clevr_dir=root.clevr), max_test_questions)

    clevr_vocab = Vocabulary.build(tokenize(r.question) for r in clevr_train)
    # Grow with the words of the whole CLEVR-Humans train split (as the reference --expand_vocab does), so
    # the vocabulary and the model's shape do not depend on the fraction used.
    vocab = Vocabulary.build((tokenize(r.question) for r in humans_all), min_count=min_word_count, base=clevr_vocab)
    answers = answer_vocabulary()

    splits = [
        _encode("clevr_train", clevr_train, clevr_vocab, answers),
        _encode("humans_train", humans_train, vocab, answers),
        _encode("clevr_val", clevr_val, clevr_vocab, answers),
        _encode("humans_test", humans_test, vocab, answers),
    ]
    width = max(len(t) for s in splits for t in s.tokens)
    size = (int(image_size[0]), int(image_size[1]))
    image_splits = sorted({r.image_split for s in splits for r in s.records})
    if scene_maps:
        caches = {split: build_scene_maps(root.clevr, split, size) for split in image_splits}
    else:
        caches = {split: build_image_cache(root.clevr, split, size, progress=progress) for split in image_splits}

    def dataset(split: EncodedSplit) -> QuestionAnswerDataset:
        image_split = split.records[0].image_split
        if any(r.image_split != image_split for r in split.records):
            mixed = {r.image_split for r in split.records}
            raise DataError(
                f"{split.name} mixes images from splits {sorted(mixed)}",
                "keep each question file's images in one split",
            )
        return _to_torch(split, caches[image_split], width)

    datasets = [dataset(s) for s in splits]
    # One task label for both experiences: the model has one head, the setting is domain-incremental.
    train = [_to_avalanche(splits[0], datasets[0], 0), _to_avalanche(splits[1], datasets[1], 0)]
    test = [_to_avalanche(splits[2], datasets[2], 0), _to_avalanche(splits[3], datasets[3], 0)]
    benchmark = benchmark_from_datasets(train=train, test=test)
    return ClevrHumansScenario(
        benchmark=benchmark,
        vocab=vocab,
        clevr_vocab_size=len(clevr_vocab),
        answers=answers,
        fingerprint=_fingerprint(root, list(caches.values())),
        sizes={s.name: len(s) for s in splits} | {"humans_train_full": len(humans_all)},
        majority_baseline={
            EXPERIENCES[0]: _majority(splits[0], splits[2]),
            EXPERIENCES[1]: _majority(splits[1], splits[3]),
        },
        test_types=[splits[2].types, splits[3].types],
        train_datasets=datasets[:2],
        test_datasets=datasets[2:],
    )
