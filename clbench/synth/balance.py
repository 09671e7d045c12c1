"""Keeping answers flat within each kind of question, so no kind can be answered from priors alone."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")


class AnswerBalancer:
    """Of a few candidate questions, keep the one whose answer is rarest so far among questions of its kind.

    CLEVR rejection-samples against per-family answer counts; taking the best of a few candidates does the
    same job without ever looping forever on a scene that cannot give the rare answer.
    """

    def __init__(self) -> None:
        self.counts: defaultdict[Hashable, Counter] = defaultdict(Counter)

    def pick(
        self, key: Hashable, candidates: Iterable[tuple[str, T]], max_share: float = 1.0, slack: int = 20
    ) -> tuple[str, T] | None:
        """The (answer, item) with the least-used answer under ``key`` (earliest wins a tie), now counted.

        None when there is no candidate, or when even the best would push its answer past ``max_share`` of
        the key's questions (beyond a ``slack`` for the first few): the caller then asks another image.
        """
        counts = self.counts[key]
        best: tuple[str, T] | None = None
        for answer, item in candidates:
            if best is None or counts[answer] < counts[best[0]]:
                best = (answer, item)
        if best is None or counts[best[0]] + 1 > max_share * (counts.total() + 1) + slack:
            return None
        counts[best[0]] += 1
        return best
