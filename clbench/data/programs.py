"""CLEVR functional programs: run one on a scene, and name its question type.

Programs and scenes are the dicts of the real CLEVR v1.0 JSON files, so one executor checks the generator's
answers and runs real CLEVR. Values passed between nodes: a frozenset of object indices (a set of objects), an
``_Object`` (exactly one object), an int (a count), a bool, or a str (an attribute value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from clbench.core.errors import ProgramError
from clbench.data.spec import ATTRIBUTES, RELATIONS

__all__ = ["FUNCTION_NAMES", "execute", "function_of", "question_type"]

_FIX = "regenerate the question, or check the program against CLEVR's function list"


class _Object(NamedTuple):
    """One object, by index: kept apart from an int count so a program cannot mix them up."""

    index: int


_SET, _OBJECT, _INT, _BOOL, _VALUE = "object set", "object", "integer", "yes/no", "attribute value"


def _kind(value: Any) -> str:
    if isinstance(value, frozenset):
        return _SET
    if isinstance(value, _Object):
        return _OBJECT
    if isinstance(value, bool):  # before int: bool is an int subclass
        return _BOOL
    if isinstance(value, int):
        return _INT
    return _VALUE


class _Scene:
    """The parts of a scene dict the functions read, looked up once per program."""

    __slots__ = ("objects", "relationships")

    def __init__(self, scene: Mapping) -> None:
        try:
            self.objects: Sequence[Mapping] = scene["objects"]
        except (KeyError, TypeError):
            raise ProgramError("the scene has no 'objects' list", "pass a scene from CLEVR_*_scenes.json") from None
        self.relationships: Mapping | None = scene.get("relationships")


class _Function(NamedTuple):
    """A CLEVR function: the kinds of its inputs, what its value input must be (or None), and its body."""

    inputs: tuple[str, ...]
    value_domain: tuple[str, ...] | None
    run: Callable[[_Scene, list, Any], Any]


# ----------------------------------------------------------------------------------------- the functions


def _scene(scene: _Scene, args: list, value: Any) -> frozenset:
    return frozenset(range(len(scene.objects)))


def _filter(attribute: str) -> Callable:
    def run(scene: _Scene, args: list, value: str) -> frozenset:
        objects = scene.objects
        return frozenset(i for i in args[0] if objects[i][attribute] == value)

    return run


def _query(attribute: str) -> Callable:
    def run(scene: _Scene, args: list, value: Any) -> str:
        return scene.objects[args[0].index][attribute]

    return run


def _same(attribute: str) -> Callable:
    """Other objects sharing the attribute: CLEVR's same_* leaves the object itself out."""

    def run(scene: _Scene, args: list, value: Any) -> frozenset:
        me = args[0].index
        mine = scene.objects[me][attribute]
        return frozenset(i for i, obj in enumerate(scene.objects) if i != me and obj[attribute] == mine)

    return run


def _equal(attribute: str) -> Callable:
    domain = ATTRIBUTES[attribute]

    def run(scene: _Scene, args: list, value: Any) -> bool:
        left, right = args
        if left not in domain or right not in domain:
            raise ProgramError(f"equal_{attribute} compares {left!r} and {right!r}, not {attribute} values", _FIX)
        return left == right

    return run


def _relate(scene: _Scene, args: list, relation: str) -> frozenset:
    if scene.relationships is None:
        raise ProgramError("relate needs the scene's 'relationships'", "pass a scene from CLEVR_*_scenes.json")
    return frozenset(scene.relationships[relation][args[0].index])


def _unique(scene: _Scene, args: list, value: Any) -> _Object:
    """A set of one object becomes that object; any other size means the question is ill-posed."""
    if len(args[0]) != 1:
        raise ProgramError(f"unique got {len(args[0])} objects, not 1: the question is ill-posed", _FIX)
    return _Object(next(iter(args[0])))


_FUNCTIONS: dict[str, _Function] = {
    "scene": _Function((), None, _scene),
    "unique": _Function((_SET,), None, _unique),
    "relate": _Function((_OBJECT,), RELATIONS, _relate),
    "union": _Function((_SET, _SET), None, lambda scene, args, value: args[0] | args[1]),
    "intersect": _Function((_SET, _SET), None, lambda scene, args, value: args[0] & args[1]),
    "count": _Function((_SET,), None, lambda scene, args, value: len(args[0])),
    "exist": _Function((_SET,), None, lambda scene, args, value: bool(args[0])),
    "equal_integer": _Function((_INT, _INT), None, lambda scene, args, value: args[0] == args[1]),
    "less_than": _Function((_INT, _INT), None, lambda scene, args, value: args[0] < args[1]),
    "greater_than": _Function((_INT, _INT), None, lambda scene, args, value: args[0] > args[1]),
}
for _attribute, _values in ATTRIBUTES.items():
    _FUNCTIONS[f"filter_{_attribute}"] = _Function((_SET,), _values, _filter(_attribute))
    _FUNCTIONS[f"query_{_attribute}"] = _Function((_OBJECT,), None, _query(_attribute))
    _FUNCTIONS[f"same_{_attribute}"] = _Function((_OBJECT,), None, _same(_attribute))
    _FUNCTIONS[f"equal_{_attribute}"] = _Function((_VALUE, _VALUE), None, _equal(_attribute))

FUNCTION_NAMES: frozenset[str] = frozenset(_FUNCTIONS)

_QUESTION_TYPES: dict[str, str] = {"exist": "exist", "count": "count"}
_QUESTION_TYPES.update(dict.fromkeys(("equal_integer", "less_than", "greater_than"), "compare_integer"))
_QUESTION_TYPES.update({f"query_{a}": "query_attribute" for a in ATTRIBUTES})
_QUESTION_TYPES.update({f"equal_{a}": "compare_attribute" for a in ATTRIBUTES})


# ------------------------------------------------------------------------------------------- the nodes


def _is_list(value: Any) -> bool:
    return type(value) in (list, tuple) or (isinstance(value, Sequence) and not isinstance(value, str))


def _node_parts(node: Any, position: int) -> tuple[str, Sequence, Sequence]:
    """(function, inputs, value inputs) of a node, in any of the spellings CLEVR's releases use.

    v1.0 says ``function``/``value_inputs``; the generator's raw output says ``type``/``side_inputs``; the
    reference code's token form puts the value in brackets (``filter_color[red]``).
    """
    if type(node) is not dict and not isinstance(node, Mapping):  # exact-type checks first: ABCs are slow
        raise ProgramError(f"node {position} is not an object: {node!r}", _FIX)
    name = node.get("function", node.get("type"))
    if not isinstance(name, str):
        raise ProgramError(f"node {position} has no function name", _FIX)
    inputs = node.get("inputs", ())
    values = node.get("value_inputs", node.get("side_inputs", ()))
    if not _is_list(inputs):
        raise ProgramError(f"node {position} ({name}) has inputs {inputs!r}, not a list", _FIX)
    if not _is_list(values):
        raise ProgramError(f"node {position} ({name}) has value inputs {values!r}, not a list", _FIX)
    if name.endswith("]") and "[" in name and not values:
        name, _, value = name[:-1].partition("[")
        values = (value,)
    return name, inputs, values


def function_of(node: Mapping) -> str:
    """The function a node calls, whichever key and spelling its file uses."""
    return _node_parts(node, 0)[0]


def execute(program: Sequence[Mapping], scene: Mapping) -> str:
    """Run a CLEVR program on a scene and return the answer as CLEVR writes it ("yes", "3", "red").

    Any problem, from a malformed node to an ill-posed ``unique``, raises ProgramError and nothing else.
    """
    if not isinstance(program, Sequence) or isinstance(program, str) or not program:
        raise ProgramError("the program is empty or not a list of nodes", _FIX)
    world = _Scene(scene)
    results: list[Any] = []
    for position, node in enumerate(program):
        name, inputs, values = _node_parts(node, position)
        function = _FUNCTIONS.get(name)
        if function is None:
            raise ProgramError(f"node {position} calls unknown function {name!r}", _FIX)
        if len(inputs) != len(function.inputs):
            raise ProgramError(f"node {position} ({name}) takes {len(function.inputs)} inputs, got {len(inputs)}", _FIX)
        args = []
        for k, expected in zip(inputs, function.inputs, strict=True):
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < position:
                raise ProgramError(f"node {position} ({name}) reads node {k!r}, which is not an earlier node", _FIX)
            if _kind(results[k]) != expected:
                raise ProgramError(
                    f"node {position} ({name}) needs an {expected}, node {k} gives an {_kind(results[k])}",
                    _FIX,
                )
            args.append(results[k])
        value = None
        if function.value_domain is None:
            if values:
                raise ProgramError(f"node {position} ({name}) takes no value input, got {list(values)}", _FIX)
        else:
            if len(values) != 1 or values[0] not in function.value_domain:
                allowed = ", ".join(function.value_domain)
                raise ProgramError(f"node {position} ({name}) needs one of {allowed}, got {list(values)}", _FIX)
            value = values[0]
        try:
            results.append(function.run(world, args, value))
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise ProgramError(f"node {position} ({name}) does not fit the scene: {err!r}", _FIX) from None
    return _answer(results[-1])


def _answer(value: Any) -> str:
    kind = _kind(value)
    if kind == _BOOL:
        return "yes" if value else "no"
    if kind == _INT:
        return str(value)
    if kind == _VALUE and isinstance(value, str):
        return value
    raise ProgramError(f"the program ends in an {kind}, not an answer", _FIX)


def question_type(program: Sequence[Mapping]) -> str:
    """One of spec.QUESTION_TYPES, named (as in the FiLM paper's tables) by the program's last function."""
    if not isinstance(program, Sequence) or isinstance(program, str) or not program:
        raise ProgramError("the program is empty, so it has no question type", _FIX)
    name = _node_parts(program[-1], len(program) - 1)[0]
    try:
        return _QUESTION_TYPES[name]
    except KeyError:
        raise ProgramError(f"a program ending in {name!r} has no CLEVR question type", _FIX) from None
