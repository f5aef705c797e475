"""`where` conditions compiled to predicates with JSON (not Python) semantics.

A predicate takes the object a path starts from (an event, or a user's traits) and
returns a bool. Paths are dotted; a segment of digits also indexes a list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

Predicate = Callable[[Any], bool]
Getter = Callable[[Any], Any]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

OPERATORS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "exists",
    "matches",
)
COMBINATORS = ("any", "all", "not")


def compile_path(path: str) -> Getter:
    """A getter for dotted `path`; it returns MISSING where the path does not lead."""
    steps = tuple((seg, int(seg) if seg.isdigit() else None) for seg in path.split("."))
    if len(steps) == 1:
        ((name, _),) = steps
        index = steps[0][1]

        def get_one(obj: Any) -> Any:
            if obj.__class__ is dict:
                return obj.get(name, MISSING)
            if obj.__class__ is list and index is not None and index < len(obj):
                return obj[index]
            return MISSING

        return get_one
    if len(steps) == 2 and steps[0][1] is None and steps[1][1] is None:
        first, second = steps[0][0], steps[1][0]

        def get_two(obj: Any) -> Any:
            if obj.__class__ is not dict:
                return MISSING
            inner = obj.get(first, MISSING)
            if inner.__class__ is not dict:
                return MISSING
            return inner.get(second, MISSING)

        return get_two

    def get_many(obj: Any) -> Any:
        for name, index in steps:
            if obj.__class__ is dict:
                obj = obj.get(name, MISSING)
                if obj is MISSING:
                    return MISSING
            elif obj.__class__ is list and index is not None and index < len(obj):
                obj = obj[index]
            else:
                return MISSING
        return obj

    return get_many


def is_number(value: Any) -> bool:
    """True for JSON numbers: ints and floats, never booleans."""
    return value.__class__ is int or value.__class__ is float


def json_eq(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: `true != 1`, `1 == 1.0`, `"5" != 5`."""
    if a.__class__ is str or b.__class__ is str:
        return a.__class__ is b.__class__ and bool(a == b)
    if is_number(a) and is_number(b):
        return bool(a == b)
    if a.__class__ is bool or b.__class__ is bool or a is None or b is None:
        return a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_eq(a[k], b[k]) for k in a)
    return False


def canonical(value: Any) -> Any:
    """A hashable form in which two values are equal exactly when `json_eq` holds."""
    if value.__class__ is bool or value is None or value.__class__ is str:
        return (value.__class__.__name__, value)
    if value.__class__ is int:
        return ("n", value)
    if value.__class__ is float:
        return ("n", int(value) if value.is_integer() else value)
    if isinstance(value, list):
        return ("l", tuple(canonical(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple(sorted((k, canonical(v)) for k, v in value.items())))
    return ("?", repr(value))


def _ordered(op: str, operand: Any) -> Predicate:
    compare: Callable[[Any, Any], bool] = {
        "gt": lambda a, b: bool(a > b),
        "gte": lambda a, b: bool(a >= b),
        "lt": lambda a, b: bool(a < b),
        "lte": lambda a, b: bool(a <= b),
    }[op]
    if is_number(operand):
        return lambda v: (v.__class__ is int or v.__class__ is float) and compare(v, operand)
    return lambda v: v.__class__ is str and compare(v, operand)


def _eq(operand: Any) -> Predicate:
    if operand.__class__ is str:
        return lambda v: v.__class__ is str and v == operand
    if is_number(operand):
        return lambda v: (v.__class__ is int or v.__class__ is float) and v == operand
    return lambda v: json_eq(v, operand)


def _contains(operand: Any) -> Predicate:
    def contains(value: Any) -> bool:
        if value.__class__ is str:
            return operand.__class__ is str and operand in value
        if value.__class__ is list:
            return any(json_eq(item, operand) for item in value)
        return False

    return contains


def operator_predicate(op: str, operand: Any) -> Predicate:
    """The predicate of one operator on a present value (callers handle MISSING)."""
    if op == "eq":
        return _eq(operand)
    if op == "ne":
        eq = _eq(operand)
        return lambda v: not eq(v)
    if op in ("gt", "gte", "lt", "lte"):
        return _ordered(op, operand)
    if op in ("in", "not_in"):
        items = operand if isinstance(operand, list) else [operand]
        keys = {canonical(item) for item in items}
        if op == "in":
            return lambda v: canonical(v) in keys
        return lambda v: canonical(v) not in keys
    if op == "contains":
        return _contains(operand)
    if op == "starts_with":
        return lambda v: v.__class__ is str and v.startswith(operand)
    if op == "ends_with":
        return lambda v: v.__class__ is str and v.endswith(operand)
    if op == "exists":
        return lambda v: bool(operand)
    if op == "matches":
        search = re.compile(operand).search
        return lambda v: v.__class__ is str and search(v) is not None
    raise ValueError(f"unknown operator {op!r}")


def path_predicate(path: str, ops: dict[str, Any]) -> Predicate:
    """All of `ops` on the value at `path`; a missing path satisfies only
    `exists: false` and `ne`."""
    get = compile_path(path)
    checks = [operator_predicate(op, operand) for op, operand in ops.items()]
    on_missing = all(op == "ne" or (op == "exists" and not operand) for op, operand in ops.items())
    if len(checks) == 1:
        (check,) = checks

        def one(obj: Any) -> bool:
            value = get(obj)
            if value is MISSING:
                return on_missing
            return check(value)

        return one

    def every(obj: Any) -> bool:
        value = get(obj)
        if value is MISSING:
            return on_missing
        return all(check(value) for check in checks)

    return every


def all_of(predicates: list[Predicate]) -> Predicate:
    """True when every predicate holds (true for none)."""
    if len(predicates) == 1:
        return predicates[0]
    items = tuple(predicates)
    return lambda obj: all(p(obj) for p in items)


def any_of(predicates: list[Predicate]) -> Predicate:
    """True when some predicate holds (false for none)."""
    items = tuple(predicates)
    return lambda obj: any(p(obj) for p in items)


def negate(predicate: Predicate) -> Predicate:
    return lambda obj: not predicate(obj)
