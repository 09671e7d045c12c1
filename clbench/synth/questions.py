"""CLEVR-style questions: a template builds a functional program and its text; the executor answers it.

Referring expressions are built to pick out exactly one object (shortest distinguishing attributes, or a
relation to an anchor), and the executor still checks every program: one that raises is dropped. Answers are
kept flat per question type (and per queried attribute or comparison) by ``AnswerBalancer``. The wording is
CLEVR's canonical one (cube, sphere, cylinder, metal, rubber, large, small); the humans split brings synonyms.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from clbench.core.errors import ProgramError
from clbench.data.programs import execute
from clbench.data.spec import ATTRIBUTES, QUESTION_TYPES, RELATIONS
from clbench.synth.balance import AnswerBalancer
from clbench.synth.presets import SynthPreset

ORDER: tuple[str, ...] = ("size", "color", "material", "shape")  # CLEVR's adjective and filter order
_RELATION_TEXT = {"left": "left of", "right": "right of", "front": "in front of", "behind": "behind"}
_COMPARISONS = ("equal_integer", "less_than", "greater_than")


@dataclass(frozen=True)
class Question:
    text: str
    program: list[dict]
    answer: str
    family: str
    question_type: str


class _Program:
    """Program nodes as CLEVR writes them; ``add`` returns the new node's index for later inputs."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []

    def add(self, function: str, inputs: Sequence[int] = (), value: str | None = None) -> int:
        self.nodes.append(
            {"inputs": list(inputs), "function": function, "value_inputs": [] if value is None else [value]}
        )
        return len(self.nodes) - 1

    def filters(self, node: int, spec: Mapping[str, str]) -> int:
        for attribute in ORDER:
            if attribute in spec:
                node = self.add(f"filter_{attribute}", [node], spec[attribute])
        return node


def noun(spec: Mapping[str, str], rng: random.Random, plural: bool = False) -> str:
    """CLEVR's noun phrase: "large red metal cube", or "thing"/"object" when no shape is named."""
    words = [spec[a] for a in ORDER[:3] if a in spec]
    words.append(spec.get("shape") or rng.choice(("thing", "object")))
    if plural:
        words[-1] += "s"
    return " ".join(words)


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


class _Context:
    """One scene, its rng and the knobs: the helpers every template shares."""

    def __init__(self, scene: Mapping, rng: random.Random, preset: SynthPreset) -> None:
        self.scene = scene
        self.objects: Sequence[Mapping] = scene["objects"]
        self.relationships: Mapping[str, list] = scene["relationships"]
        self.rng = rng
        self.preset = preset

    def anchor_hops(self) -> int:
        """Hops in an anchor's own description: 0, or 1 for the occasional two-hop question."""
        return 1 if self.rng.random() < self.preset.two_hop_prob else 0

    def distinguishing(
        self, target: int, pool: Sequence[int], exclude: Sequence[str], allow_empty: bool
    ) -> dict | None:
        """Attributes telling ``target`` from the rest of ``pool``: fewest first, sometimes one spare."""
        rng, me = self.rng, self.objects[target]
        others = [self.objects[j] for j in pool if j != target]
        attributes = [a for a in ORDER if a not in exclude]
        for size in range(0 if allow_empty else 1, len(attributes) + 1):
            subsets = list(combinations(attributes, size))
            rng.shuffle(subsets)
            for subset in subsets:
                if all(any(other[a] != me[a] for a in subset) for other in others):
                    chosen = set(subset)
                    spare = [a for a in attributes if a not in chosen]
                    if spare and rng.random() < 0.25:  # CLEVR often says a little more than it must
                        chosen.add(rng.choice(spare))
                    return {a: me[a] for a in ORDER if a in chosen}
        return None

    def refer(
        self, program: _Program, target: int, hops: int = 0, exclude: Sequence[str] = ()
    ) -> tuple[int, str] | None:
        """Nodes ending in ``unique`` that pick ``target``, and its phrase minus "the" ("small red cube")."""
        if hops == 0:
            spec = self.distinguishing(target, range(len(self.objects)), exclude, allow_empty=False)
            if spec is None:  # an identical twin: only a relation can tell them apart
                return None
            node = program.filters(program.add("scene"), spec)
            return program.add("unique", [node]), noun(spec, self.rng)
        anchors = [j for j in range(len(self.objects)) if j != target]
        self.rng.shuffle(anchors)
        for anchor in anchors:
            relations = [r for r in RELATIONS if target in self.relationships[r][anchor]]
            if not relations:
                continue
            relation = self.rng.choice(relations)
            spec = self.distinguishing(target, self.relationships[relation][anchor], exclude, allow_empty=True)
            if spec is None:
                continue
            mark = len(program.nodes)
            described = self.refer(program, anchor, hops - 1)
            if described is None:
                del program.nodes[mark:]
                continue
            node = program.filters(program.add("relate", [described[0]], relation), spec)
            that = self.rng.choice(("that is ", ""))
            phrase = f"{noun(spec, self.rng)} {that}{_RELATION_TEXT[relation]} the {described[1]}"
            return program.add("unique", [node]), phrase
        return None

    def spec(self, pool: Sequence[int] | None = None, least: int = 1, exclude: Sequence[str] = ()) -> dict:
        """Filter values for a set: often copied from an object of ``pool`` (so the set is rarely empty)."""
        rng = self.rng
        attributes = [a for a in ORDER if a not in exclude]
        wanted = rng.choices((0, 1, 2, 3), weights=(2, 5, 4, 1))[0]
        chosen = rng.sample(attributes, min(len(attributes), max(least, wanted)))
        pool = range(len(self.objects)) if pool is None else pool
        if pool and rng.random() < 0.65:
            source = self.objects[rng.choice(list(pool))]
            return {a: source[a] for a in ORDER if a in chosen}
        return {a: rng.choice(ATTRIBUTES[a]) for a in ORDER if a in chosen}

    def target(self) -> int:
        return self.rng.randrange(len(self.objects))


# -------------------------------------------------------------------------------------------- templates
# Each template fills a program and returns its text, or None when the scene cannot give a well-posed one.
# ``detail`` is the queried attribute or the comparison the slot asked for (None where it does not apply).

Template = Callable[[_Context, _Program, str | None], str | None]


def _same_phrase(attribute: str, rng: random.Random) -> str:
    if attribute == "material":
        return rng.choice(("made of the same material as", "the same material as"))
    return f"the same {attribute} as"


def _exist(ctx: _Context, program: _Program, detail: str | None) -> str:
    spec = ctx.spec()
    program.add("exist", [program.filters(program.add("scene"), spec)])
    return ctx.rng.choice((f"Are there any {noun(spec, ctx.rng, True)}?", f"Is there {_article(noun(spec, ctx.rng))}?"))


def _related_filtered(ctx: _Context, program: _Program) -> tuple[int, dict, str] | None:
    """Objects related to a described anchor, filtered: (program node, filter spec, "left of the ...")."""
    anchor = ctx.target()
    described = ctx.refer(program, anchor, ctx.anchor_hops())
    if described is None:
        return None
    relation = ctx.rng.choice(RELATIONS)
    spec = ctx.spec(ctx.relationships[relation][anchor], least=0)
    node = program.filters(program.add("relate", [described[0]], relation), spec)
    return node, spec, f"{_RELATION_TEXT[relation]} the {described[1]}"


def _exist_relate(ctx: _Context, program: _Program, detail: str | None) -> str | None:
    related = _related_filtered(ctx, program)
    if related is None:
        return None
    node, spec, where = related
    program.add("exist", [node])
    return ctx.rng.choice(
        (
            f"Are there any {noun(spec, ctx.rng, True)} {where}?",
            f"Is there {_article(noun(spec, ctx.rng))} {where}?",
        )
    )


def _same_filtered(ctx: _Context, program: _Program) -> tuple[int, dict, str, str] | None:
    """Other objects sharing an attribute with a described one, filtered: (node, spec, attribute, description)."""
    attribute = ctx.rng.choice(ORDER)
    described = ctx.refer(program, ctx.target())
    if described is None:
        return None
    spec = ctx.spec(least=0, exclude=(attribute,))
    node = program.filters(program.add(f"same_{attribute}", [described[0]]), spec)
    return node, spec, attribute, described[1]


def _exist_same(ctx: _Context, program: _Program, detail: str | None) -> str | None:
    same_as = _same_filtered(ctx, program)
    if same_as is None:
        return None
    node, spec, attribute, described = same_as
    program.add("exist", [node])
    same = _same_phrase(attribute, ctx.rng)
    return ctx.rng.choice(
        (
            f"Are there any other {noun(spec, ctx.rng, True)} that are {same} the {described}?",
            f"Is there another {noun(spec, ctx.rng)} that is {same} the {described}?",
        )
    )


def _count(ctx: _Context, program: _Program, detail: str | None) -> str:
    spec = ctx.spec(least=0)
    program.add("count", [program.filters(program.add("scene"), spec)])
    things = noun(spec, ctx.rng, True)
    return ctx.rng.choice((f"How many {things} are there?", f"What number of {things} are there?"))


def _count_relate(ctx: _Context, program: _Program, detail: str | None) -> str | None:
    related = _related_filtered(ctx, program)
    if related is None:
        return None
    node, spec, where = related
    program.add("count", [node])
    things = noun(spec, ctx.rng, True)
    return ctx.rng.choice((f"How many {things} are {where}?", f"What number of {things} are {where}?"))


def _count_union(ctx: _Context, program: _Program, detail: str | None) -> str | None:
    first, second = ctx.spec(), ctx.spec()
    if first == second:
        return None
    a = program.filters(program.add("scene"), first)
    b = program.filters(program.add("scene"), second)
    program.add("count", [program.add("union", [a, b])])
    one, other = noun(first, ctx.rng, True), noun(second, ctx.rng, True)
    return ctx.rng.choice((f"How many things are either {one} or {other}?", f"How many {one} or {other} are there?"))


def _count_intersect(ctx: _Context, program: _Program, detail: str | None) -> str | None:
    first, second = ctx.rng.sample(range(len(ctx.objects)), 2)
    one = ctx.refer(program, first)
    other = ctx.refer(program, second)
    if one is None or other is None:
        return None
    r1, r2 = ctx.rng.choice(RELATIONS), ctx.rng.choice(RELATIONS)
    both = program.add("intersect", [program.add("relate", [one[0]], r1), program.add("relate", [other[0]], r2)])
    spec = ctx.spec(least=0)
    program.add("count", [program.filters(both, spec)])
    return (
        f"How many {noun(spec, ctx.rng, True)} are both {_RELATION_TEXT[r1]} the {one[1]}"
        f" and {_RELATION_TEXT[r2]} the {other[1]}?"
    )


def _count_same(ctx: _Context, program: _Program, detail: str | None) -> str | None:
    same_as = _same_filtered(ctx, program)
    if same_as is None:
        return None
    node, spec, attribute, described = same_as
    program.add("count", [node])
    things, same = noun(spec, ctx.rng, True), _same_phrase(attribute, ctx.rng)
    return ctx.rng.choice(
        (
            f"How many other {things} are {same} the {described}?",
            f"What number of other {things} are {same} the {described}?",
        )
    )


_COMPARISON_TEXT = {
    "equal_integer": (
        "Are there the same number of {a} and {b}?",
        "Is the number of {a} the same as the number of {b}?",
        "Are there an equal number of {a} and {b}?",
    ),
    "less_than": ("Are there fewer {a} than {b}?", "Is the number of {a} less than the number of {b}?"),
    "greater_than": ("Are there more {a} than {b}?", "Is the number of {a} greater than the number of {b}?"),
}


def _compare_counts(ctx: _Context, program: _Program, comparison: str | None, related: bool) -> str | None:
    first, second = ctx.spec(), ctx.spec()
    if first == second:
        return None
    where = ""
    if related:
        anchor = ctx.target()
        described = ctx.refer(program, anchor, ctx.anchor_hops())
        if described is None:
            return None
        relation = ctx.rng.choice(RELATIONS)
        a = program.filters(program.add("relate", [described[0]], relation), first)
        where = f" {_RELATION_TEXT[relation]} the {described[1]}"
    else:
        a = program.filters(program.add("scene"), first)
    count_a = program.add("count", [a])
    count_b = program.add("count", [program.filters(program.add("scene"), second)])
    program.add(comparison or "equal_integer", [count_a, count_b])
    text = ctx.rng.choice(_COMPARISON_TEXT[comparison or "equal_integer"])
    return text.format(a=noun(first, ctx.rng, True) + where, b=noun(second, ctx.rng, True))


_QUERY_TEXT = {
    "color": ("What color is the {x}?", "What is the color of the {x}?", "The {x} is what color?"),
    "shape": ("What shape is the {x}?", "What is the shape of the {x}?", "The {x} has what shape?"),
    "material": ("What material is the {x}?", "What is the {x} made of?", "What is the material of the {x}?"),
    "size": ("What size is the {x}?", "What is the size of the {x}?", "How big is the {x}?"),
}
_QUERY_IT = {"color": "what color is it", "shape": "what shape is it", "material": "what is it made of"}
_QUERY_IT["size"] = "how big is it"


def _query(ctx: _Context, program: _Program, attribute: str | None, hops: int) -> str | None:
    attribute = attribute or "color"
    described = ctx.refer(program, ctx.target(), hops, exclude=(attribute,))
    if described is None:
        return None
    program.add(f"query_{attribute}", [described[0]])
    if ctx.rng.random() < 0.2:
        return f"There is {_article(described[1])}; {_QUERY_IT[attribute]}?"
    return _capital(ctx.rng.choice(_QUERY_TEXT[attribute]).format(x=described[1]))


_COMPARE_TEXT = {
    "color": (
        "Does the {a} have the same color as the {b}?",
        "Is the color of the {a} the same as the {b}?",
        "Is the {a} the same color as the {b}?",
    ),
    "shape": (
        "Does the {a} have the same shape as the {b}?",
        "Is the shape of the {a} the same as the {b}?",
        "Is the {a} the same shape as the {b}?",
    ),
    "material": (
        "Is the {a} made of the same material as the {b}?",
        "Are the {a} and the {b} made of the same material?",
        "Does the {a} have the same material as the {b}?",
    ),
    "size": (
        "Does the {a} have the same size as the {b}?",
        "Is the {a} the same size as the {b}?",
        "Are the {a} and the {b} the same size?",
    ),
}


def _compare_attribute(ctx: _Context, program: _Program, attribute: str | None, related: bool) -> str | None:
    attribute = attribute or "color"
    first = ctx.target()
    sharing = [j for j, o in enumerate(ctx.objects) if j != first and o[attribute] == ctx.objects[first][attribute]]
    others = [j for j in range(len(ctx.objects)) if j != first]
    second = ctx.rng.choice(sharing if sharing and ctx.rng.random() < 0.5 else others)
    hops = (1 + ctx.anchor_hops(), 0) if related else (0, 0)
    if related and ctx.rng.random() < 0.5:
        hops = hops[::-1]
    one = ctx.refer(program, first, hops[0], exclude=(attribute,))
    other = ctx.refer(program, second, hops[1], exclude=(attribute,))
    if one is None or other is None:
        return None
    a = program.add(f"query_{attribute}", [one[0]])
    b = program.add(f"query_{attribute}", [other[0]])
    program.add(f"equal_{attribute}", [a, b])
    return ctx.rng.choice(_COMPARE_TEXT[attribute]).format(a=one[1], b=other[1])


# name -> (question type, relational?, weight within its group, template). The order gives
# question_family_index, so append new families at the end.
FAMILIES: dict[str, tuple[str, bool, float, Template]] = {
    "exist": ("exist", False, 1.0, _exist),
    "exist_same": ("exist", False, 0.5, _exist_same),
    "exist_relate": ("exist", True, 1.0, _exist_relate),
    "count": ("count", False, 1.0, _count),
    "count_union": ("count", False, 0.4, _count_union),
    "count_same": ("count", False, 0.4, _count_same),
    "count_relate": ("count", True, 1.0, _count_relate),
    "count_intersect": ("count", True, 0.3, _count_intersect),
    "compare_integer": ("compare_integer", False, 1.0, lambda c, p, d: _compare_counts(c, p, d, False)),
    "compare_integer_relate": ("compare_integer", True, 1.0, lambda c, p, d: _compare_counts(c, p, d, True)),
    "query_attribute": ("query_attribute", False, 1.0, lambda c, p, d: _query(c, p, d, 0)),
    "query_attribute_relate": (
        "query_attribute",
        True,
        1.0,
        lambda c, p, d: _query(c, p, d, 1 + c.anchor_hops()),
    ),
    "compare_attribute": (
        "compare_attribute",
        False,
        1.0,
        lambda c, p, d: _compare_attribute(c, p, d, False),
    ),
    "compare_attribute_relate": (
        "compare_attribute",
        True,
        1.0,
        lambda c, p, d: _compare_attribute(c, p, d, True),
    ),
}
FAMILY_INDEX: dict[str, int] = {name: i for i, name in enumerate(FAMILIES)}


def _detail(question_type: str, rng: random.Random) -> str | None:
    """What the slot asks within its type, balanced on its own: the attribute, or the integer comparison."""
    if question_type in ("query_attribute", "compare_attribute"):
        return rng.choice(ORDER)
    if question_type == "compare_integer":
        return rng.choice(_COMPARISONS)
    return None


def _family(question_type: str, rng: random.Random, preset: SynthPreset) -> str:
    related = rng.random() < preset.relation_prob
    names = [n for n, (t, r, _, _) in FAMILIES.items() if t == question_type and r == related]
    return rng.choices(names, weights=[FAMILIES[n][2] for n in names])[0]


class QuestionEngine:
    """Questions for one split, their types mixed evenly and their answers balanced across all its images."""

    def __init__(self, preset: SynthPreset, rng: random.Random) -> None:
        self.preset = preset
        self.rng = rng
        self.balancer = AnswerBalancer()
        self._types: list[str] = []

    def _next_type(self) -> str:
        if not self._types:  # a shuffled round of all five types: an even mix, no fixed pattern
            self._types = list(QUESTION_TYPES)
            self.rng.shuffle(self._types)
        return self._types.pop()

    def candidates(self, ctx: _Context, question_type: str, detail: str | None, seen: set[str]):
        """Well-posed candidates for one slot: (answer, Question), the executor's answer each time."""
        for _ in range(self.preset.balance_candidates):
            family = _family(question_type, self.rng, self.preset)
            program = _Program()
            text = FAMILIES[family][3](ctx, program, detail)
            if text is None or text in seen:
                continue
            try:
                answer = execute(program.nodes, ctx.scene)
            except ProgramError:
                continue
            yield answer, Question(text, program.nodes, answer, family, question_type)

    def for_scene(self, scene: Mapping) -> list[Question]:
        ctx = _Context(scene, self.rng, self.preset)
        questions: list[Question] = []
        seen: set[str] = set()
        for _ in range(self.preset.questions_per_image):
            question_type = self._next_type()
            detail = _detail(question_type, self.rng)
            chosen = self.balancer.pick((question_type, detail), self.candidates(ctx, question_type, detail, seen))
            if chosen is not None:
                seen.add(chosen[1].text)
                questions.append(chosen[1])
        return questions
