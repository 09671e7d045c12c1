"""From question records to an Avalanche benchmark: what every scenario shares once it has chosen its questions.

A scenario decides which questions make each training experience and each test set (`Part`s); `assemble`
encodes them, caches their images (or draws their scene maps), and builds the Avalanche benchmark together with
what the model, metrics and reports need to know about it (`Benchmark`).

It also holds out each training experience's validation set (`BuildContext.validation`, the scenario's
`validation` share), by image, so every scenario, a user's too, has one without code of its own: the benchmark's
`valid_stream`, never trained on, on which hyperparameters are chosen (`clbench tune`) instead of the test sets.

Every sample carries its question type (inside its `FiLMInput`, for per-type metrics),
the largest token index its question uses (so the model's embedding can grow to fit each experience), and a
task label (0: one head, the setting is domain-incremental). Datasets and experiences are task-aware the way
Avalanche's own benchmarks are (`task_set`, `targets_task_labels`, `experience.task_labels`), so task-aware
plugins such as LwF run unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
from torch.utils.data import Dataset

from clbench.core.errors import DataError
from clbench.data.cache import ImageCache, build_image_cache
from clbench.data.clevr import QuestionRecord
from clbench.data.inputs import FiLMInput
from clbench.data.scene_maps import SceneMaps, build_scene_maps
from clbench.data.spec import QUESTION_TYPES
from clbench.data.vocab import AnswerVocabulary, Vocabulary, answer_vocabulary, tokenize
from clbench.model.backbone import require_weights
from clbench.model.features import find_feature_cache, weights_identity

_NO_TYPE = "humans"  # questions without a program (CLEVR-Humans) have no CLEVR type
TYPE_NAMES: tuple[str, ...] = (*QUESTION_TYPES, _NO_TYPE)


@dataclass(frozen=True)
class BuildContext:
    """What a scenario needs from the run to build its benchmark: where the data is and how to read it."""

    root: Path  # the dataset root: a real download, or the scenario's generated world
    image_size: tuple[int, int]
    seed: int = 0
    min_word_count: int = 5  # words of later experiences rarer than this become <UNK>
    max_train_questions: int | None = None  # cap per training experience
    max_test_questions: int | None = None  # cap per test set
    scene_maps: bool = False  # the state-description front-end instead of pixels
    # the resnet101 stem's weights ("imagenet" | "random"): its features are read from the feature cache where
    # `python -m clbench data features` made them for these images and weights, else computed from pixels
    features: str | None = None
    progress: bool = True
    validation: float = 0.0  # share of each training experience's images held out as its validation set


@dataclass(frozen=True)
class Part:
    """One training experience or test set: its name, its questions, and the vocabulary that encodes them."""

    name: str
    records: list[QuestionRecord]
    vocab: Vocabulary


class QuestionAnswerDataset(Dataset):
    """Questions over a memory-mapped image cache (or scene maps); items are `(FiLMInput, answer_index)`."""

    def __init__(
        self,
        images: ImageCache | SceneMaps,
        rows: np.ndarray,
        questions: np.ndarray,
        lengths: np.ndarray,
        answers: np.ndarray,
        types: np.ndarray | None = None,
    ) -> None:
        self.images, self.rows, self.questions, self.lengths, self.answers = images, rows, questions, lengths, answers
        self.types = types if types is not None else np.zeros(len(rows), dtype=np.int64)
        # Indexing a tensor is several times cheaper than making one per sample (`torch.tensor`), and a sample is
        # fetched once per question per epoch: at the paper's speed, tens of thousands a second.
        self._tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (questions, lengths, self.types))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[FiLMInput, int]:
        image = self.images.sample(int(self.rows[i]))
        questions, lengths, types = self._tensors
        return FiLMInput(image, questions[i], lengths[i], types[i]), int(self.answers[i])


@dataclass
class Benchmark:
    """The Avalanche benchmark plus what the model, metrics and reports need to know about it."""

    benchmark: object  # avalanche CLScenario with train_stream and test_stream
    experience_names: tuple[str, ...]  # one per training experience
    test_names: tuple[str, ...]  # one per test set
    vocab: Vocabulary  # the largest: every later experience's words included
    first_vocab_size: int  # what the model starts with; the embedding grows as experiences bring words
    answers: AnswerVocabulary
    fingerprint: str
    sizes: dict[str, int]
    majority_baseline: dict[str, float]  # per test set: accuracy of always answering its experience's majority
    inputs: str = "pixels"  # what the samples hold: pixels, features (from the feature cache) or scene maps
    type_names: tuple[str, ...] = TYPE_NAMES
    train_datasets: list[QuestionAnswerDataset] = field(default_factory=list)  # plain PyTorch, for benchmarks
    test_datasets: list[QuestionAnswerDataset] = field(default_factory=list)
    test_types: list[np.ndarray] = field(default_factory=list)  # per test set: each question's index in type_names
    validation_names: tuple[str, ...] = ()  # one per training experience, or none (`scenario.validation=0`)
    validation_datasets: list[QuestionAnswerDataset] = field(default_factory=list)

    bank: object | None = None  # a FeatureBank the samples index, when the features sit on the training device

    def place_features(self, bank) -> None:
        """Make every dataset read rows of `bank` (a FeatureBank built from this benchmark's feature caches)."""
        for dataset in self._datasets():
            dataset.images = bank.rows[dataset.images.split]
        self.bank = bank

    def feature_caches(self) -> dict:
        return {d.images.split: d.images for d in self._datasets()}

    def _datasets(self) -> tuple[QuestionAnswerDataset, ...]:
        return (*self.train_datasets, *self.test_datasets, *self.validation_datasets)

    @property
    def train_stream(self):
        return self.benchmark.train_stream  # type: ignore[attr-defined]

    @property
    def test_stream(self):
        return self.benchmark.test_stream  # type: ignore[attr-defined]

    @property
    def valid_stream(self):
        """The validation sets, experience j's paired with training experience j; empty without a split."""
        return getattr(self.benchmark, "valid_stream", [])


def subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded `fraction` of `n` items; smaller fractions are subsets of larger ones."""
    keep = max(1, math.ceil(fraction * n))
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


def cap(records: list[QuestionRecord], limit: int | None) -> list[QuestionRecord]:
    """A fixed, seed-independent subset, so every run evaluates on the same questions."""
    if limit is None or len(records) <= limit:
        return records
    return [records[i] for i in subsample(len(records), limit / len(records), seed=12345)[:limit]]


def _image_draw(filename: str) -> float:
    """A fixed number in [0, 1) per image name: the same image is held out in every experience, run and world."""
    return int.from_bytes(hashlib.sha256(filename.encode()).digest()[:8], "big") / 2**64


def hold_out(part: Part, share: float) -> tuple[Part, Part]:
    """`part` split by image into (training, validation): the questions on the images whose fixed draw is below
    `share` are validation, so no image is in both; at least one image on each side."""
    images = sorted({r.image_filename for r in part.records}, key=_image_draw)
    if len(images) < 2:
        raise DataError(
            f"{part.name} asks about {len(images)} image(s): no validation set can be held out by image",
            "give it questions on more images, or scenario.validation=0",
        )
    held = sum(_image_draw(name) < share for name in images)
    chosen = set(images[: min(max(held, 1), len(images) - 1)])
    train = [r for r in part.records if r.image_filename not in chosen]
    valid = [r for r in part.records if r.image_filename in chosen]
    return Part(part.name, train, part.vocab), Part(part.name, valid, part.vocab)


def vocabulary(records: Iterable[QuestionRecord], min_count: int = 1, base: Vocabulary | None = None) -> Vocabulary:
    return Vocabulary.build((tokenize(r.question) for r in records), min_count=min_count, base=base)


@dataclass
class _Encoded:
    name: str
    records: list[QuestionRecord]
    tokens: list[list[int]]
    answers: np.ndarray
    types: np.ndarray


def _encode(part: Part, answers: AnswerVocabulary, type_names: Sequence[str]) -> _Encoded:
    if not part.records:
        raise DataError(f"{part.name} holds no questions", "check the scenario's parameters and the data")
    tokens = [part.vocab.encode(tokenize(r.question)) for r in part.records]
    answer_ids = np.array([answers.encode(r.answer) for r in part.records], dtype=np.int64)  # type: ignore[arg-type]
    types = np.array([type_names.index(r.question_type or _NO_TYPE) for r in part.records], dtype=np.int64)
    return _Encoded(part.name, part.records, tokens, answer_ids, types)


def _pad(tokens: Sequence[Sequence[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(tokens), width), dtype=np.int64)
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    for i, t in enumerate(tokens):
        out[i, : len(t)] = t
    return out, lengths


def _dataset(split: _Encoded, caches: dict[str, ImageCache | SceneMaps], width: int) -> QuestionAnswerDataset:
    image_split = split.records[0].image_split
    if any(r.image_split != image_split for r in split.records):
        mixed = sorted({r.image_split for r in split.records})
        raise DataError(f"{split.name} mixes images from splits {mixed}", "keep a question file's images in one split")
    images = caches[image_split]
    rows = np.array([images.index[r.image_filename] for r in split.records], dtype=np.int64)
    questions, lengths = _pad(split.tokens, width)
    return QuestionAnswerDataset(images, rows, questions, lengths, split.answers, split.types)


def avalanche_dataset(base: QuestionAnswerDataset) -> TaskAwareSupervisedClassificationDataset:
    """The questions as an Avalanche dataset, with the attributes strategies and the model's adaptation read."""
    return TaskAwareSupervisedClassificationDataset(
        [base],
        data_attributes=[
            DataAttribute(base.answers.tolist(), "targets"),
            DataAttribute(base.types.tolist(), "question_type"),
            DataAttribute(base.questions.max(axis=1).tolist(), "question_max_token"),
            DataAttribute([0] * len(base), "targets_task_labels", use_in_getitem=True),
        ],
    )


def fingerprint(files: Iterable[Path], caches: Iterable[ImageCache | SceneMaps]) -> str:
    """The question files' bytes and the images' fingerprints: equal only for the same data."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 22), b""):
                digest.update(chunk)
    for cache in caches:
        digest.update(cache.fingerprint.encode())
    return digest.hexdigest()[:16]


def _inputs(
    context: BuildContext, clevr_dir: Path, splits: Sequence[str], size: tuple[int, int]
) -> tuple[dict[str, ImageCache | SceneMaps], str]:
    """Scene maps, the feature cache when it holds every split, or decoded pixels."""
    if context.scene_maps:
        return {split: build_scene_maps(clevr_dir, split, size) for split in splits}, "scene"
    if context.features is not None:
        identity = weights_identity(context.features)
        found = {split: find_feature_cache(clevr_dir, split, size, identity) for split in splits}
        if all(cache is not None for cache in found.values()):
            return found, "features"  # type: ignore[return-value]
        require_weights(context.features)  # the pixels path needs the backbone: say so before caching any image
    return {split: build_image_cache(clevr_dir, split, size, progress=context.progress) for split in splits}, "pixels"


def _majority(train: _Encoded, test: _Encoded) -> float:
    most_common = Counter(train.answers.tolist()).most_common(1)[0][0]
    return float((test.answers == most_common).mean())


def assemble(
    context: BuildContext,
    clevr_dir: Path,
    train: Sequence[Part],
    test: Sequence[Part],
    *,
    files: Iterable[Path],
    first_vocab_size: int,
    sizes: dict[str, int] | None = None,
) -> Benchmark:
    """Encode the parts, cache their images, and build the benchmark; test set j pairs with experience j, and so
    does validation set j, held out of experience j (`context.validation`)."""
    answers = answer_vocabulary()
    valid: list[Part] = []
    if context.validation > 0:
        train, valid = (list(parts) for parts in zip(*(hold_out(p, context.validation) for p in train), strict=True))
    train_enc, test_enc, valid_enc = ([_encode(p, answers, TYPE_NAMES) for p in ps] for ps in (train, test, valid))
    width = max(len(t) for s in (*train_enc, *test_enc, *valid_enc) for t in s.tokens)
    size = (int(context.image_size[0]), int(context.image_size[1]))
    image_splits = sorted({r.image_split for s in (*train_enc, *test_enc) for r in s.records})
    caches, inputs = _inputs(context, clevr_dir, image_splits, size)
    train_sets, test_sets, valid_sets = (
        [_dataset(s, caches, width) for s in e] for e in (train_enc, test_enc, valid_enc)
    )
    streams = {"train": train_sets, "test": test_sets} | ({"valid": valid_sets} if valid_sets else {})
    benchmark = with_task_labels(  # task label 0 everywhere, exposed as Avalanche's own benchmarks do
        benchmark_from_datasets(**{name: [avalanche_dataset(d) for d in sets] for name, sets in streams.items()})
    )
    largest = max((p.vocab for p in (*train, *test)), key=len)
    return Benchmark(
        benchmark=benchmark,
        experience_names=tuple(p.name for p in train),
        test_names=tuple(p.name for p in test),
        vocab=largest,
        first_vocab_size=first_vocab_size,
        answers=answers,
        fingerprint=fingerprint(files, caches.values()),
        sizes={f"train/{s.name}": len(s.records) for s in train_enc}
        | {f"test/{s.name}": len(s.records) for s in test_enc}
        | {f"valid/{s.name}": len(s.records) for s in valid_enc}
        | (sizes or {}),
        inputs=inputs,
        majority_baseline={t.name: _majority(train_enc[min(j, len(train_enc) - 1)], t) for j, t in enumerate(test_enc)},
        train_datasets=train_sets,
        test_datasets=test_sets,
        test_types=[s.types for s in test_enc],
        validation_names=tuple(s.name for s in valid_enc),
        validation_datasets=valid_sets,
    )
