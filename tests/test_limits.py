"""docs/server.md, Limits and bad input: the structural limits of an event, where each is named,
and the raw-JSON scanners that keep one undecodable event from taking its batch with it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire import limits
from tripwire.errors import EventError
from tripwire.server import rawjson


def nested(depth: int, leaf: Any = 1) -> Any:
    """`depth` levels of objects and lists (alternating) around `leaf`."""
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


def refused(obj: Any) -> EventError:
    with pytest.raises(EventError) as caught:
        limits.check(obj)
    return caught.value


@pytest.mark.parametrize(
    ("event", "field", "fragment"),
    [
        ({"traits": {"n": 2**64}}, "traits.n", "64-bit"),
        ({"traits": {"n": 2**63}}, "traits.n", "64-bit"),
        ({"traits": {"n": -(2**63) - 1}}, "traits.n", "64-bit"),
        ({"properties": {"a": {"b": [0, 1, 2, 10**30]}}}, "properties.a.b[3]", "64-bit"),
        ({"properties": {"x": float("nan")}}, "properties.x", "finite"),
        ({"properties": {"x": [float("-inf")]}}, "properties.x[0]", "finite"),
        ({"properties": {"s": "x" * (limits.MAX_STRING + 1)}}, "properties.s", "string of 16385"),
        ({"properties": {"k" * (limits.MAX_KEY + 1): 1}}, "properties", "a key of 257"),
        ({"context": {str(i): i for i in range(limits.MAX_KEYS + 1)}}, "context", "1001 keys"),
        ({"properties": {"l": list(range(limits.MAX_ITEMS + 1))}}, "properties.l", "2001 items"),
        (
            {"properties": {"deep": nested(limits.MAX_DEPTH)}},
            "properties.deep.a" + "[0].a" * 30 + "[0]",
            "deeper than 64",
        ),
        ({"properties": {1: "x"}}, "properties", "keys must be strings"),
    ],
)
def test_each_limit_names_the_json_path_of_the_bad_value(event: dict[str, Any], field: str, fragment: str) -> None:
    error = refused(event)
    assert error.field == field
    assert fragment in error.message


def segments(path: str) -> int:
    return path.count(".") + path.count("[") + 1


def test_a_nesting_far_past_the_recursion_limit_is_named_without_recursing() -> None:
    """Issue 7 item 3: 1,100 levels used to be a RecursionError (500) in the encoders."""
    error = refused({"properties": nested(100_000)})
    # The first container past the limit: the 65th level, 64 steps below the event.
    assert error.field.startswith("properties.a[0].a") and segments(error.field) == limits.MAX_DEPTH
    assert "deeper than 64" in error.message


def test_values_at_each_limit_are_good() -> None:
    limits.check(
        {
            "properties": {
                "deep": nested(limits.MAX_DEPTH - 2),  # the event and properties are two levels
                "big": limits.INT_MAX,
                "small": limits.INT_MIN,
                "s": "x" * limits.MAX_STRING,
                "k" * limits.MAX_KEY: 1.5,
                "l": [None] * limits.MAX_ITEMS,
            },
            "context": {str(i): True for i in range(limits.MAX_KEYS)},
        }
    )


def test_the_first_bad_value_in_document_order_is_named() -> None:
    assert refused({"a": {"b": 2**70}, "c": 2**70}).field == "a.b"
    assert refused([0, [1, 2**70], 2**70]).field == "[1][1]"


# The fast decoders hold every limit up to FAST_DEPTH levels; anything they refuse, the
# slow way (decode, then check) must either refuse too or accept because it is only
# deeper than FAST_DEPTH. So no event takes the fast way past a limit.
FAST = msgspec.json.Decoder(limits.EVENT)  # built once: the type is a tree of a thousand nodes
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**66), 2**66)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=3), json_values, max_size=5))
def test_the_fast_decode_and_the_walk_agree(event: dict[str, Any]) -> None:
    body = msgspec.json.encode(event)
    try:
        fast = FAST.decode(body)
    except msgspec.ValidationError:
        fast = None
    try:
        limits.check(event)
        slow_ok = True
    except EventError:
        slow_ok = False
    if fast is not None:
        assert slow_ok and fast == event
    else:
        assert not slow_ok or _depth(event) > limits.FAST_DEPTH


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_the_fast_decode_refuses_each_limit() -> None:
    for bad in (
        {"n": 2**63},
        {"s": "x" * (limits.MAX_STRING + 1)},
        {"k" * (limits.MAX_KEY + 1): 1},
        {str(i): 1 for i in range(limits.MAX_KEYS + 1)},
        {"l": [1] * (limits.MAX_ITEMS + 1)},
        {"d": nested(limits.FAST_DEPTH)},
    ):
        with pytest.raises(msgspec.ValidationError):
            FAST.decode(msgspec.json.encode(bad))


# -- rawjson: reading a batch that does not decode as a whole --------------------------


def test_a_batch_that_does_not_decode_splits_into_its_items() -> None:
    deep = b"[" * 2000 + b"]" * 2000
    body = b'{"batch": [{"a": "x, ]}"}, ' + deep + b', {"b": NaN}, 7], "sentAt": "s", "context": {}}'
    found = rawjson.members(body)
    assert found is not None
    assert [key for key, _ in found] == [b'"batch"', b'"sentAt"', b'"context"']
    pieces = rawjson.items(found[0][1])
    assert pieces is not None
    assert [p.strip() for p in pieces] == [b'{"a": "x, ]}"}', deep, b'{"b": NaN}', b"7"]


@pytest.mark.parametrize(
    "text",
    [b"", b"[1]", b'{"a": 1', b'{"a": 1}}', b'{"a": [1}', b'{"a": 1} x', b'{"a"}', b'{"a": "1}'],
)
def test_text_that_is_not_one_object_does_not_split(text: bytes) -> None:
    assert rawjson.members(text) is None


def test_empty_containers_have_no_pieces() -> None:
    assert rawjson.members(b" {} ") == []
    assert rawjson.items(b"[ ]") == []


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (b'{"properties": {"a": [1, {"b": NaN}]}}', "properties.a[1].b"),
        (b'{"properties": {"a": "x\\ud800y"}}', "properties.a"),
        (b'{"p": ["ok", "\\ud800"]}', "p[1]"),
        (b'{"p": {"\\udc00": 1}}', "p"),
        (b'{"p": {"n": [1, 1e400]}}', "p.n[1]"),
        (b'{"p": {"n": -' + b"9" * 5000 + b"}}", "p.n"),
        (b'{"traits": {"x": Infinity}}', "traits.x"),
        (b'{"p": ' + b'{"q": ' * 5000 + b"1" + b"}" * 5001, "p" + ".q" * 63),  # the 65th level
    ],
)
def test_the_path_of_what_does_not_decode_is_found(text: bytes, path: str) -> None:
    with pytest.raises((msgspec.DecodeError, RecursionError)) as caught:
        msgspec.json.decode(text)
    assert rawjson.failure_path(text, caught.value, limits.MAX_DEPTH) == path
