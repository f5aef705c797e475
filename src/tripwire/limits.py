"""Structural limits on an event's JSON: nesting, number range, string, key and list sizes.

Anything past them could not be stored (MessagePack has no integer beyond 64 bits),
would blow the stack of a recursive encoder, or would make one event cost what
thousands should. Two ways to hold them: `EVENT` and `BATCH` are msgspec types that
check while decoding, at the speed of a plain decode, but only to `FAST_DEPTH` levels;
`check` is the authority, a walk level by level that never recurses (no depth can raise
RecursionError) and names the path of what it refuses.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final, Union

from msgspec import Meta

from tripwire.errors import EventError

MAX_DEPTH: Final = 64  # levels of objects and lists, the event itself being the first
MAX_STRING: Final = 16_384  # characters in one string value
MAX_KEY: Final = 256  # characters in one object key
MAX_KEYS: Final = 1_000  # keys in one object
MAX_ITEMS: Final = 2_000  # items in one list
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
# msgspec builds a tree of every level's type (each level holds the next twice, in objects
# and in lists), so its size doubles with each level: 10 levels are ample for what SDKs
# send, and a deeper event only takes the slow way through `check`.
FAST_DEPTH: Final = 10


def _fast_types() -> tuple[Any, Any]:
    key = Annotated[str, Meta(max_length=MAX_KEY)]
    text = Annotated[str, Meta(max_length=MAX_STRING)]
    whole = Annotated[int, Meta(ge=INT_MIN, le=INT_MAX)]
    value: Any = Union[text, whole, float, bool, None]  # noqa: UP007  # a runtime type expression
    for _ in range(FAST_DEPTH - 1):
        value = Union[  # noqa: UP007  # a runtime type expression
            Annotated[dict[key, value], Meta(max_length=MAX_KEYS)],
            Annotated[list[value], Meta(max_length=MAX_ITEMS)],
            text,
            whole,
            float,
            bool,
            None,
        ]
    event = Annotated[dict[key, value], Meta(max_length=MAX_KEYS)]
    # A batch body: `batch` a list of events, `context` an object at an event's depth, `sentAt` a string.
    batch = dict[key, Union[list[event], event, text, whole, float, bool, None]]  # noqa: UP007
    return event, batch


# Decoding with these types checks every limit but nesting past FAST_DEPTH; when one fails,
# decode without a type and `check`, which finds what is wrong and where (or that nothing is).
EVENT, BATCH = _fast_types()


def check(obj: dict[str, Any] | list[Any], path: str = "") -> None:
    """Raise EventError naming the JSON path (`properties.a.b[3]`) of the first value past a limit.

    `path` is where `obj` sits, for the names of what lies below it.
    """
    if not _within(obj):
        raise _locate(obj, path)


def _within(root: dict[str, Any] | list[Any]) -> bool:
    """Whether every value under `root` is within the limits; the cheap walk of the common case."""
    level: list[Any] = [root]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            return False
        below: list[Any] = []
        for container in level:
            if container.__class__ is dict:
                if len(container) > MAX_KEYS:
                    return False
                for key in container:
                    if key.__class__ is not str or len(key) > MAX_KEY:
                        return False
                values = container.values()
            else:
                if len(container) > MAX_ITEMS:
                    return False
                values = container
            for value in values:
                cls = value.__class__
                if cls is str:
                    if len(value) > MAX_STRING:
                        return False
                elif cls is int:
                    if value > INT_MAX or value < INT_MIN:
                        return False
                elif cls is dict or cls is list:
                    below.append(value)
                elif cls is float and not math.isfinite(value):
                    return False
        level = below
        depth += 1
    return True


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _locate(root: dict[str, Any] | list[Any], path: str) -> EventError:
    """The error for the first value past a limit, depth first, with its path."""
    todo: list[tuple[Any, str, int]] = [(root, path, 1)]
    while todo:
        value, where, depth = todo.pop()
        problem = _problem(value, depth)
        if problem is not None:
            return EventError(where or "(event)", problem)
        if value.__class__ is dict:
            children = [(v, _child(where, str(k)), depth + 1) for k, v in value.items()]
        elif value.__class__ is list:
            children = [(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        else:
            continue
        todo.extend(reversed(children))
    return EventError(path or "(event)", "a value is past the structural limits of an event")  # not reached


def _problem(value: Any, depth: int) -> str | None:
    """What is wrong with `value` itself (not what it holds), or None."""
    cls = value.__class__
    if cls is dict or cls is list:
        if depth > MAX_DEPTH:
            return f"objects and lists are nested deeper than {MAX_DEPTH} levels here; send flatter data"
        if cls is list:
            if len(value) > MAX_ITEMS:
                return f"a list of {len(value)} items; the limit is {MAX_ITEMS}"
            return None
        if len(value) > MAX_KEYS:
            return f"an object with {len(value)} keys; the limit is {MAX_KEYS}"
        for key in value:
            if key.__class__ is not str:
                return f"object keys must be strings, got {key!r}"
            if len(key) > MAX_KEY:
                return f"a key of {len(key)} characters ({key[:32]!r}...); the limit is {MAX_KEY}"
        return None
    if cls is str and len(value) > MAX_STRING:
        return f"a string of {len(value)} characters; the limit is {MAX_STRING}"
    if cls is int and not INT_MIN <= value <= INT_MAX:
        # No digits: a number this large may have more than str() will print.
        return "an integer outside the 64-bit range (-2^63 to 2^63-1); send a larger number as a string"
    if cls is float and not math.isfinite(value):
        return f"{value} is not a finite number"
    return None
