"""CLEVR → CLEVR-Humans: train on CLEVR, fine-tune on a fraction of CLEVR-Humans (the paper's Section 4.2).

train stream: [CLEVR train, CLEVR-Humans train subsampled to `fraction`]
test stream:  [CLEVR val,   CLEVR-Humans test]   (CLEVR's test split has no answers: results are on val)
"""

from __future__ import annotations

from dataclasses import dataclass

from clbench.core.errors import ConfigError, DataError
from clbench.data.clevr import DatasetRoot, read_clevr_questions, read_humans_questions
from clbench.scenario import Benchmark, BuildContext, Part, Scenario, assemble, cap, register, subsample, vocabulary

CLEVR, HUMANS = "CLEVR", "CLEVR-Humans"


@register("clevr-humans")
@dataclass
class ClevrHumans(Scenario):
    """CLEVR, then a fraction of CLEVR-Humans: new words and new reasoning over the same images."""

    fraction: float = 1.0  # share of CLEVR-Humans train used for fine-tuning (the paper's Figure 9)

    later_only = ("fraction",)

    def validate(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(
                f"fraction {self.fraction} is outside (0, 1]",
                "give the share of CLEVR-Humans train, e.g. --fraction 0.33",
            )

    def experience_names(self) -> tuple[str, ...]:
        return (CLEVR, HUMANS)

    def build(self, context: BuildContext) -> Benchmark:
        root = DatasetRoot.locate(context.root)
        if root.humans is None:
            raise DataError(
                f"{root.root} has no CLEVR-Humans/ folder; the scenario fine-tunes on it",
                "unpack CLEVR-Humans beside CLEVR_v1.0/, or use the generated default (omit --data)",
            )
        clevr_train = cap(read_clevr_questions(root.clevr, "train"), context.max_train_questions)
        clevr_val = cap(read_clevr_questions(root.clevr, "val"), context.max_test_questions)
        humans_all = read_humans_questions(root.humans, "train", clevr_dir=root.clevr)
        humans_train = [humans_all[i] for i in subsample(len(humans_all), self.fraction, context.seed)]
        humans_train = cap(humans_train, context.max_train_questions)
        humans_test = cap(read_humans_questions(root.humans, "test", clevr_dir=root.clevr), context.max_test_questions)

        clevr_vocab = vocabulary(clevr_train)
        # Grown with the words of the whole CLEVR-Humans train split (as the reference --expand_vocab does), so
        # the vocabulary and the model's shape do not depend on the fraction used.
        grown = vocabulary(humans_all, min_count=context.min_word_count, base=clevr_vocab)
        files = sorted((root.clevr / "questions").glob("CLEVR_*_questions.json"))
        files += sorted(root.humans.glob("CLEVR-Humans-*.json"))
        return assemble(
            context,
            root.clevr,
            train=[Part(CLEVR, clevr_train, clevr_vocab), Part(HUMANS, humans_train, grown)],
            test=[Part(CLEVR, clevr_val, clevr_vocab), Part(HUMANS, humans_test, grown)],
            files=files,
            first_vocab_size=len(clevr_vocab),
            sizes={"train_all/CLEVR-Humans": len(humans_all)},
        )
