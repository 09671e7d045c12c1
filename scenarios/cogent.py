"""CLEVR-CoGenT A → B: the FiLM paper's own forgetting experiment (its Table 3 and Figure 9).

Condition A colours cubes and cylinders from two disjoint palettes; condition B swaps them. The model trains on
trainA, then fine-tunes on condition-B questions taken from valB, and is tested on valA and on the rest of valB.

train stream: [trainA, a `fraction` of the pool: the questions on `pool_images` images of valB]
test stream:  [valA,   valB's questions on every other image]

The pool's images are chosen once, with a fixed seed, so every run and fraction shares the same test set and
no image is in both the pool and the test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clbench.core.errors import ConfigError, DataError
from clbench.data.clevr import DatasetRoot, read_clevr_questions, require_split
from clbench.data.spec import COGENT_DIRNAME
from clbench.scenario import Benchmark, BuildContext, Part, Scenario, assemble, cap, register, subsample, vocabulary

A, B = "CoGenT-A", "CoGenT-B"
POOL_SEED = 12345  # fixed: the pool/test split of valB is the same for every run
SPLITS = ("trainA", "valA", "valB")


@register("cogent")
@dataclass
class CoGenT(Scenario):
    """CLEVR-CoGenT: train on condition A, fine-tune on a fraction of condition-B questions from valB."""

    fraction: float = 1.0  # share of the pool used for fine-tuning (the paper's Figure 9)
    pool_images: int | None = None  # valB images whose questions form the pool (default: a fifth of valB, as the
    # paper's 30K of valB's 150K questions)

    world = "cogent"
    later_only = ("fraction", "pool_images")
    references = {  # noqa: RUF012 (a ClassVar declared on Scenario)  the paper's Table 3, after fine-tuning on B
        "FiLM (paper)": {A: 0.808, B: 0.969},
        "PG+EE (paper)": {A: 0.761, B: 0.927},
    }

    def validate(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(
                f"fraction {self.fraction} is outside (0, 1]", "give the share of the B pool, e.g. --fraction 0.33"
            )
        if self.pool_images is not None and self.pool_images < 1:
            raise ConfigError(f"scenario.pool_images={self.pool_images} is below 1", "give 1 or more, or none")

    def experience_names(self) -> tuple[str, ...]:
        return (A, B)

    def build(self, context: BuildContext) -> Benchmark:
        root = DatasetRoot.locate(context.root, clevr_dirname=COGENT_DIRNAME)
        for split in SPLITS:
            require_split(root.clevr, split)
        train_a = cap(read_clevr_questions(root.clevr, "trainA"), context.max_train_questions)
        val_a = cap(read_clevr_questions(root.clevr, "valA"), context.max_test_questions)
        val_b = read_clevr_questions(root.clevr, "valB")
        images = sorted({r.image_filename for r in val_b})
        count = self.pool_images if self.pool_images is not None else max(1, len(images) // 5)
        if count >= len(images):
            raise DataError(
                f"scenario.pool_images={count} leaves no valB image to test on ({len(images)} images have questions)",
                f"give scenario.pool_images below {len(images)}",
            )
        chosen = {images[i] for i in np.random.default_rng(POOL_SEED).permutation(len(images))[:count]}
        pool = [r for r in val_b if r.image_filename in chosen]
        test_b = cap([r for r in val_b if r.image_filename not in chosen], context.max_test_questions)
        fine_tune = cap(
            [pool[i] for i in subsample(len(pool), self.fraction, context.seed)], context.max_train_questions
        )

        vocab_a = vocabulary(train_a)
        grown = vocabulary(pool, min_count=context.min_word_count, base=vocab_a)
        files = [root.clevr / "questions" / f"CLEVR_{split}_questions.json" for split in SPLITS]
        return assemble(
            context,
            root.clevr,
            train=[Part(A, train_a, vocab_a), Part(B, fine_tune, grown)],
            test=[Part(A, val_a, vocab_a), Part(B, test_b, grown)],
            files=files,
            first_vocab_size=len(vocab_a),
            sizes={"pool/questions": len(pool), "pool/images": count},
        )
