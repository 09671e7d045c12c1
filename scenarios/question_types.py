"""CLEVR split by question type into a stream of experiences, in an order the user gives (Greco et al. 2019).

`order` lists the experiences, comma-separated; each is a question type, several joined by `+` (the experience
is then named with `-`, as MLflow names allow no `+`), or a group:
`wh` (query_attribute + count) and `yesno` (exist + compare_integer + compare_attribute), Greco et al.'s
two tasks. Experience i trains on CLEVR train questions of its types and is tested on CLEVR val questions of
the same types; every experience is tested on every test set, so the accuracy matrix shows what each new
type costs the old ones.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from clbench.core.errors import ConfigError, DataError
from clbench.data.clevr import DatasetRoot, read_clevr_questions
from clbench.data.spec import QUESTION_TYPES
from clbench.scenario import Benchmark, BuildContext, Part, Scenario, assemble, cap, register, vocabulary

GROUPS: dict[str, tuple[str, ...]] = {
    "wh": ("query_attribute", "count"),
    "yesno": ("exist", "compare_integer", "compare_attribute"),
}


def parse_order(order: str) -> list[tuple[str, tuple[str, ...]]]:
    """`exist,count+query_attribute,yesno` → [(experience name, its question types), ...]; refuses mistakes."""
    experiences: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for position, item in enumerate(order.split(","), 1):
        name = item.strip()
        if not name:
            raise ConfigError(
                f"scenario.order={order!r} has an empty experience (position {position})",
                "list question types or groups separated by single commas, e.g. exist,count",
            )
        types: list[str] = []
        for token in (t.strip() for t in name.split("+")):
            if token in GROUPS:
                types += GROUPS[token]
            elif token in QUESTION_TYPES:
                types.append(token)
            else:
                known = [*QUESTION_TYPES, *GROUPS]
                close = difflib.get_close_matches(token, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"scenario.order names an unknown question type {token!r}{hint}",
                    f"use {', '.join(QUESTION_TYPES)} or the groups {', '.join(GROUPS)}",
                )
        repeated = seen.intersection(types)
        if repeated:
            raise ConfigError(
                f"scenario.order={order!r} puts {', '.join(sorted(repeated))} in two experiences",
                "give each question type to one experience",
            )
        seen.update(types)
        experiences.append((name.replace("+", "-").replace(" ", ""), tuple(types)))
    return experiences


@register("question-types")
@dataclass
class QuestionTypes(Scenario):
    """CLEVR by question type, one experience per type or group, in the order given."""

    order: str = ",".join(QUESTION_TYPES)

    def validate(self) -> None:
        parse_order(self.order)

    def experience_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in parse_order(self.order))

    def experience0_identity(self) -> dict[str, object]:
        """Only the first experience's types: orders that start alike share the cached experience 0."""
        return {"first": sorted(parse_order(self.order)[0][1])}

    def build(self, context: BuildContext) -> Benchmark:
        root = DatasetRoot.locate(context.root)
        train_all = read_clevr_questions(root.clevr, "train")
        val_all = read_clevr_questions(root.clevr, "val")
        vocab = vocabulary(train_all)  # every type's words: the model's shape does not depend on the order
        train, test = [], []
        for name, types in parse_order(self.order):
            chosen = set(types)
            questions = [r for r in train_all if r.question_type in chosen]
            if not questions:
                raise DataError(
                    f"experience {name!r} of scenario.order has no CLEVR train questions in {root.clevr}",
                    "leave that type out of scenario.order, or use data that has it",
                )
            train.append(Part(name, cap(questions, context.max_train_questions), vocab))
            tests = [r for r in val_all if r.question_type in chosen]
            test.append(Part(name, cap(tests, context.max_test_questions), vocab))
        files = [root.clevr / "questions" / f"CLEVR_{split}_questions.json" for split in ("train", "val")]
        return assemble(context, root.clevr, train, test, files=files, first_vocab_size=len(vocab))
