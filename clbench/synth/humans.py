"""Humans-like questions, written as CLEVR-Humans writes them: free text and an answer, no program.

Two halves, as in the real CLEVR-Humans: paraphrases of CLEVR's questions in words CLEVR's templates never use
("ball", "shiny", "how much", "hue", lower case, no question mark), and reasoning the templates lack (extremes
such as "the leftmost object", counting distinct colours, "are all the balls red?", negation). Answers come
straight from the scene and stay within CLEVR's 28, balanced within each kind of question.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from clbench.data.spec import ATTRIBUTES
from clbench.synth.balance import AnswerBalancer
from clbench.synth.presets import SynthPreset

_SHAPE_WORDS = {
    "cube": ("block", "box", "cube"),
    "sphere": ("ball", "sphere", "orb"),
    "cylinder": ("can", "tube", "cylinder"),
}
_PLURAL = {"box": "boxes"}
_THING_WORDS = ("object", "thing", "item")
_MATERIAL_WORDS = {"metal": ("shiny", "metallic", "reflective"), "rubber": ("matte", "dull", "rubbery")}
_SIZE_WORDS = {"large": ("big", "huge", "large"), "small": ("tiny", "little", "small")}
_COLOR_WORDS = {c: (c,) for c in ATTRIBUTES["color"]} | {
    "gray": ("grey", "gray"),
    "cyan": ("cyan", "teal", "aqua"),
}
_COLOR_NOUNS = ("color", "colour", "hue")
_ADJECTIVE_ATTRIBUTES = ("size", "color", "material")


@dataclass(frozen=True)
class HumansQuestion:
    text: str
    answer: str
    kind: str


class _Scene:
    """A scene's objects, with the words that name their attributes the way people do."""

    def __init__(self, scene: Mapping, rng: random.Random) -> None:
        self.objects: Sequence[Mapping] = scene["objects"]
        self.coords = [obj["3d_coords"] for obj in self.objects]
        self.rng = rng

    def word(self, attribute: str, value: str) -> str:
        table = {"shape": _SHAPE_WORDS, "material": _MATERIAL_WORDS, "size": _SIZE_WORDS, "color": _COLOR_WORDS}
        return self.rng.choice(table[attribute][value])

    def phrase(self, spec: Mapping[str, str], plural: bool = False) -> str:
        """A loose noun phrase: adjectives in any order, shape by a synonym, or a plain "thing"."""
        adjectives = [self.word(a, spec[a]) for a in _ADJECTIVE_ATTRIBUTES if a in spec]
        self.rng.shuffle(adjectives)
        head = self.word("shape", spec["shape"]) if "shape" in spec else self.rng.choice(_THING_WORDS)
        if plural:
            head = _PLURAL.get(head, head + "s")
        return " ".join([*adjectives, head])

    def matching(self, spec: Mapping[str, str]) -> list[int]:
        return [i for i, obj in enumerate(self.objects) if all(obj[a] == v for a, v in spec.items())]

    def spec(self, attributes: Sequence[str] = ("size", "color", "material", "shape"), most: int = 2) -> dict:
        """One or two attribute values, usually those of an object in view."""
        chosen = self.rng.sample(list(attributes), self.rng.randint(1, min(most, len(attributes))))
        if self.rng.random() < 0.65:
            source = self.rng.choice(self.objects)
            return {a: source[a] for a in chosen}
        return {a: self.rng.choice(ATTRIBUTES[a]) for a in chosen}

    def unique_spec(self, target: int, exclude: str) -> dict | None:
        """A short description picking ``target`` out by attributes other than ``exclude``."""
        me = self.objects[target]
        attributes = [a for a in ("color", "shape", "size", "material") if a != exclude]
        self.rng.shuffle(attributes)
        for count in (1, 2, 3):
            for start in range(len(attributes)):
                spec = {a: me[a] for a in (attributes * 2)[start : start + count]}
                if self.matching(spec) == [target]:
                    return spec
        return None

    def the(self, phrase: str) -> str:
        """People drop articles: "what color is ball on left"."""
        return phrase if self.rng.random() < 0.2 else f"the {phrase}"


def _finish(text: str, rng: random.Random) -> str:
    """Loose typing: often lower case, sometimes no question mark."""
    if rng.random() < 0.4:
        text = text[0].upper() + text[1:]
    return text + ("?" if rng.random() < 0.7 else "")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# ------------------------------------------------------------------------------------------ paraphrases
# Each kind returns (text, answer) or None; ``detail`` is the attribute or comparison its slot balances on.

Kind = Callable[[_Scene, str | None], tuple[str, str] | None]


def _exist(s: _Scene, detail: str | None) -> tuple[str, str]:
    spec = s.spec()
    one, many = s.phrase(spec), s.phrase(spec, plural=True)
    text = s.rng.choice(
        (
            f"is there {_article(one)}",
            f"are there any {many} in the picture",
            f"do you see {_article(one)}",
            f"can you see any {many}",
            f"is there at least one {one}",
            f"any {many} here",
        )
    )
    return text, _yes(bool(s.matching(spec)))


def _count(s: _Scene, detail: str | None) -> tuple[str, str]:
    spec = s.spec()
    many = s.phrase(spec, plural=True)
    text = s.rng.choice(
        (
            f"how much {many} are there",
            f"how many {many} can you see",
            f"count the {many}",
            f"what is the total number of {many}",
            f"number of {many} in the image",
            f"how many {many} are in the picture",
        )
    )
    return text, str(len(s.matching(spec)))


_QUERY_WORDS: dict[str, tuple[str, ...]] = {
    "color": ("what {c} is {x}", "{x} is what {c}", "which {c} does {x} have", "tell me the {c} of {x}"),
    "shape": (
        "what shape does {x} have",
        "{x} is shaped like what",
        "what kind of shape is {x}",
        "what form is {x}",
    ),
    "material": (
        "is {x} shiny or matte",
        "what is {x} made out of",
        "what type of material is {x}",
        "{x} is made of what",
    ),
    "size": ("is {x} big or small", "how large is {x}", "is {x} tiny or huge", "what is the size of {x}"),
}


def _query(s: _Scene, attribute: str | None) -> tuple[str, str] | None:
    attribute = attribute or "color"
    target = s.rng.randrange(len(s.objects))
    spec = s.unique_spec(target, attribute)
    if spec is None:
        return None
    template = s.rng.choice(_QUERY_WORDS[attribute])
    text = template.format(x=s.the(s.phrase(spec)), c=s.rng.choice(_COLOR_NOUNS))
    return text, s.objects[target][attribute]


_SAME_WORDS: dict[str, tuple[str, ...]] = {
    "color": ("are {a} and {b} the same {c}", "do {a} and {b} have matching {c}s", "is {a} colored like {b}"),
    "shape": (
        "are {a} and {b} the same shape",
        "do {a} and {b} have matching shapes",
        "is {a} shaped like {b}",
    ),
    "material": (
        "are {a} and {b} made of the same stuff",
        "is {a} as shiny as {b}",
        "do {a} and {b} share a material",
    ),
    "size": ("are {a} and {b} equally big", "do {a} and {b} have matching sizes", "is {a} as large as {b}"),
}


def _compare_attribute(s: _Scene, attribute: str | None) -> tuple[str, str] | None:
    attribute = attribute or "color"
    if len(s.objects) < 2:
        return None
    first, second = s.rng.sample(range(len(s.objects)), 2)
    one, other = s.unique_spec(first, attribute), s.unique_spec(second, attribute)
    if one is None or other is None:
        return None
    template = s.rng.choice(_SAME_WORDS[attribute])
    text = template.format(a=s.the(s.phrase(one)), b=s.the(s.phrase(other)), c=s.rng.choice(_COLOR_NOUNS))
    return text, _yes(s.objects[first][attribute] == s.objects[second][attribute])


_MORE_WORDS: dict[str, tuple[str, ...]] = {
    "more": (
        "are there more {a} than {b}",
        "do {a} outnumber {b}",
        "is the amount of {a} bigger than the amount of {b}",
    ),
    "fewer": (
        "are there less {a} than {b}",
        "are there fewer {a} than {b}",
        "is the amount of {a} smaller than {b}",
    ),
    "same": (
        "are there as many {a} as {b}",
        "is the amount of {a} equal to the amount of {b}",
        "same amount of {a} and {b}",
    ),
}


def _compare_counts(s: _Scene, comparison: str | None) -> tuple[str, str] | None:
    comparison = comparison or "same"
    first, second = s.spec(), s.spec()
    if first == second:
        return None
    a, b = len(s.matching(first)), len(s.matching(second))
    answer = {"more": a > b, "fewer": a < b, "same": a == b}[comparison]
    text = s.rng.choice(_MORE_WORDS[comparison])
    return text.format(a=s.phrase(first, plural=True), b=s.phrase(second, plural=True)), _yes(answer)


# ---------------------------------------------------------------------------------- new kinds of reasoning

_EXTREMES: dict[str, tuple[int, int, tuple[str, ...], tuple[str, ...]]] = {
    # name: (coordinate, sign, adjectives before the noun, phrases after it)
    "left": (0, -1, ("leftmost", "left-most"), ("furthest to the left", "on the far left")),
    "right": (0, 1, ("rightmost", "right-most"), ("furthest to the right", "on the far right")),
    "front": (1, -1, ("frontmost", "nearest"), ("closest to the front", "nearest to the camera")),
    "back": (1, 1, ("farthest", "rearmost"), ("farthest back", "furthest from the camera")),
}


def _extreme(s: _Scene) -> tuple[int, str]:
    """An object at one end of the scene, maybe among one shape only, and the words for it."""
    end = s.rng.choice(tuple(_EXTREMES))
    axis, sign, before, after = _EXTREMES[end]
    pool = list(range(len(s.objects)))
    head = s.rng.choice(_THING_WORDS)
    if s.rng.random() < 0.3:
        shape = s.objects[s.rng.choice(pool)]["shape"]
        among = [i for i in pool if s.objects[i]["shape"] == shape]
        if len(among) >= 2:
            pool, head = among, s.word("shape", shape)
    target = max(pool, key=lambda i: sign * s.coords[i][axis])
    if s.rng.random() < 0.5:
        return target, f"{s.rng.choice(before)} {head}"
    return target, f"{head} {s.rng.choice(after)}"


_EXTREME_QUERY: dict[str, tuple[str, ...]] = {
    "color": ("what {c} is the {x}", "the {x} is what {c}", "what is the {c} of the {x}"),
    "shape": ("what shape is the {x}", "what kind of shape is the {x}", "the {x} has what shape"),
    "material": (
        "what material is the {x} made of",
        "is the {x} shiny or matte",
        "what is the {x} made from",
    ),
    "size": ("how big is the {x}", "is the {x} big or little", "what size is the {x}"),
}


def _extreme_query(s: _Scene, attribute: str | None) -> tuple[str, str]:
    attribute = attribute or "color"
    target, words = _extreme(s)
    text = s.rng.choice(_EXTREME_QUERY[attribute]).format(x=words, c=s.rng.choice(_COLOR_NOUNS))
    return text, s.objects[target][attribute]


def _extreme_check(s: _Scene, detail: str | None) -> tuple[str, str]:
    target, words = _extreme(s)
    attribute = s.rng.choice(("color", "shape", "material", "size"))
    value = s.rng.choice([s.objects[target][attribute], s.rng.choice(ATTRIBUTES[attribute])])
    said = s.word(attribute, value)
    text = f"is the {words} {_article(said) if attribute == 'shape' else said}"
    return text, _yes(s.objects[target][attribute] == value)


_DISTINCT_WORDS: dict[str, tuple[str, ...]] = {
    "color": ("how many different {c}s {among}", "how many distinct {c}s {among}"),
    "shape": ("how many different shapes {among}", "how many kinds of shapes {among}"),
    "material": ("how many different materials {among}", "how many kinds of material {among}"),
    "size": ("how many different sizes {among}", "how many sizes of objects {among}"),
}


def _distinct(s: _Scene, attribute: str | None) -> tuple[str, str] | None:
    """Distinct values over the whole scene or over a group ("... among the shiny things")."""
    attribute = attribute or "color"
    members = list(range(len(s.objects)))
    among = s.rng.choice(("are there", "can you see", "are in the picture"))
    if s.rng.random() < 0.6:
        group = s.spec([a for a in ("color", "shape", "material", "size") if a != attribute], most=1)
        members = s.matching(group)
        if not members:
            return None
        among = s.rng.choice(("are among the {g}", "do the {g} have", "are there among the {g}"))
        among = among.format(g=s.phrase(group, plural=True))
    text = s.rng.choice(_DISTINCT_WORDS[attribute]).format(c=s.rng.choice(_COLOR_NOUNS), among=among)
    return text, str(len({s.objects[i][attribute] for i in members}))


def _all(s: _Scene, detail: str | None) -> tuple[str, str] | None:
    group_attribute, property_attribute = s.rng.sample(("color", "shape", "material", "size"), 2)
    group = {group_attribute: s.rng.choice(s.objects)[group_attribute]}
    members = s.matching(group)
    value = s.rng.choice([s.objects[s.rng.choice(members)][property_attribute], *ATTRIBUTES[property_attribute]])
    said = s.word(property_attribute, value)
    if property_attribute == "shape":
        said = _PLURAL.get(said, said + "s")
    many = s.phrase(group, plural=True)
    text = s.rng.choice((f"are all the {many} {said}", f"are all {many} {said}", f"are the {many} all {said}"))
    return text, _yes(all(s.objects[i][property_attribute] == value for i in members))


def _count_not(s: _Scene, detail: str | None) -> tuple[str, str]:
    attribute = s.rng.choice(("color", "shape", "material", "size"))
    value = s.rng.choice(s.objects)[attribute]
    said = s.word(attribute, value)
    if attribute == "shape":
        many = _PLURAL.get(said, said + "s")
        text = s.rng.choice((f"how many objects are not {many}", f"how many things aren't {many}"))
    else:
        text = s.rng.choice((f"how many things are not {said}", f"how many non-{said} objects are there"))
    return text, str(sum(obj[attribute] != value for obj in s.objects))


def _article(phrase: str) -> str:
    return f"an {phrase}" if phrase[0] in "aeiou" else f"a {phrase}"


# name -> (novel reasoning?, what a slot balances on within the kind, builder)
KINDS: dict[str, tuple[bool, tuple[str, ...] | None, Kind]] = {
    "exist": (False, None, _exist),
    "count": (False, None, _count),
    "query": (False, ("color", "shape", "material", "size"), _query),
    "compare_attribute": (False, ("color", "shape", "material", "size"), _compare_attribute),
    "compare_count": (False, ("more", "fewer", "same"), _compare_counts),
    "extreme_query": (True, ("color", "shape", "material", "size"), _extreme_query),
    "extreme_check": (True, None, _extreme_check),
    "distinct": (True, ("color", "shape", "material", "size"), _distinct),
    "all": (True, None, _all),
    "count_not": (True, None, _count_not),
}


class HumansEngine:
    """Humans-like questions about a list of scenes, spread over them, answers balanced within each kind."""

    MAX_SHARE = 0.6  # no answer above this share of its kind (after the first few questions)

    def __init__(self, preset: SynthPreset, rng: random.Random) -> None:
        self.preset = preset
        self.rng = rng
        self.balancer = AnswerBalancer()
        novel = [k for k, (n, _, _) in KINDS.items() if n]
        familiar = [k for k, (n, _, _) in KINDS.items() if not n]
        self.kinds = novel + familiar
        share = preset.humans_novel_share
        self.weights = [share / len(novel)] * len(novel) + [(1 - share) / len(familiar)] * len(familiar)

    def generate(self, scenes: Sequence[Mapping], count: int) -> list[tuple[Mapping, HumansQuestion]]:
        """``count`` questions, images taken in turn; a slot that would unbalance its kind moves on."""
        order: list[int] = []
        asked: set[tuple[int, str]] = set()
        out: list[tuple[Mapping, HumansQuestion]] = []
        for _ in range(50 * count):  # a bound, never reached in practice: each slot succeeds most of the time
            if len(out) == count:
                break
            if not order:  # every image once per round, in a fresh order
                order = list(range(len(scenes)))
                self.rng.shuffle(order)
            index = order.pop()
            question = self.one(scenes[index], asked, index)
            if question is not None:
                out.append((scenes[index], question))
        return out

    def one(self, scene: Mapping, asked: set[tuple[int, str]], index: int) -> HumansQuestion | None:
        view = _Scene(scene, self.rng)
        kind = self.rng.choices(self.kinds, weights=self.weights)[0]
        _, details, build = KINDS[kind]
        detail = self.rng.choice(details) if details else None

        def candidates():
            for _ in range(self.preset.balance_candidates):
                built = build(view, detail)
                if built is not None and (index, built[0]) not in asked:
                    yield built[1], built[0]

        chosen = self.balancer.pick((kind, detail), candidates(), max_share=self.MAX_SHARE)
        if chosen is None:
            return None
        answer, text = chosen
        asked.add((index, text))
        return HumansQuestion(_finish(text, self.rng), answer, kind)
