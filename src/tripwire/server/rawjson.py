"""JSON text that does not decode as a whole: a batch split into its items, the path of a bad byte.

One event a decoder refuses (nested past the interpreter's recursion limit, a lone
surrogate escape, a number out of range) must not take the good events of its batch
with it. These scanners read only brackets, commas, colons and strings, with a regular
expression and a loop, never recursing, so no input can exhaust the stack; they are
only used once a normal decode has failed.
"""

from __future__ import annotations

import math
import re
from typing import Final

import msgspec

_TOKEN: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}:,]|-?[0-9][0-9.eE+-]*', re.DOTALL)
_OPEN: Final = {ord("{"): ord("}"), ord("["): ord("]")}
_QUOTE: Final = ord('"')
_COMMA: Final = ord(",")
_COLON: Final = ord(":")
_AT_BYTE: Final = re.compile(r"\(byte (\d+)\)")
_SPACE: Final = b" \t\r\n"
# A high surrogate escape not followed by a low one, or a low one alone (msgspec's message
# for these does not always say where).
_LONE_SURROGATE: Final = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def members(text: bytes) -> list[tuple[bytes, bytes]] | None:
    """The `(key, value)` texts of a JSON object's members; None when `text` is not one object.

    Keys are the raw JSON strings. Only the brackets must balance; what lies inside a
    member may be anything, for its own decode to judge.
    """
    pieces = _pieces(text, ord("{"))
    if pieces is None:
        return None
    found: list[tuple[bytes, bytes]] = []
    for piece, colon in pieces:
        if colon < 0:
            return None
        found.append((piece[:colon].strip(_SPACE), piece[colon + 1 :]))
    return found


def items(text: bytes) -> list[bytes] | None:
    """The texts of a JSON array's items; None when `text` is not one array."""
    pieces = _pieces(text, ord("["))
    return None if pieces is None else [piece for piece, _ in pieces]


def _pieces(text: bytes, opener: int) -> list[tuple[bytes, int]] | None:
    """The top-level pieces of one container, each with the offset of its first top-level colon."""
    start = len(text) - len(text.lstrip(_SPACE))
    if start == len(text) or text[start] != opener:
        return None
    closers: list[int] = []
    pieces: list[tuple[bytes, int]] = []
    begin = colon = -1
    end = -1
    for token in _TOKEN.finditer(text, start):
        at = token.start()
        char = text[at]
        if char in _OPEN:
            closers.append(_OPEN[char])
            if len(closers) == 1:
                begin = at + 1
        elif char == ord("}") or char == ord("]"):
            if not closers or closers.pop() != char:
                return None
            if not closers:
                pieces.append((text[begin:at], colon - begin if colon >= 0 else -1))
                end = token.end()
                break
        elif len(closers) == 1 and char == _COMMA:
            pieces.append((text[begin:at], colon - begin if colon >= 0 else -1))
            begin, colon = token.end(), -1
        elif len(closers) == 1 and char == _COLON and colon < 0:
            colon = at
    if end < 0 or text[end:].strip(_SPACE):
        return None
    if len(pieces) == 1 and not pieces[0][0].strip(_SPACE):
        return []  # `{}` or `[]`
    return pieces


def _key_text(token: bytes) -> str:
    try:
        key = msgspec.json.decode(token)
    except msgspec.DecodeError:
        key = None
    return key if isinstance(key, str) else token.strip(b'"').decode("utf-8", "replace")


class _Frame:
    """An open container while scanning: an object's current key (or a list's index)."""

    __slots__ = ("at", "expecting_key", "is_object")

    def __init__(self, is_object: bool) -> None:
        self.is_object = is_object
        self.at: str | int | None = None if is_object else 0
        self.expecting_key = is_object


def locate(text: bytes, *, depth: int | None = None, offset: int | None = None, huge: bool = False) -> str:
    """The JSON path (`properties.a[3]`) where `text` first nests past `depth` containers,
    reaches byte `offset`, or (`huge`) holds a number no float can hold; "" for the top.
    """
    frames: list[_Frame] = []
    for token in _TOKEN.finditer(text):
        at = token.start()
        char = text[at]
        if offset is not None and token.end() > offset:
            return _path(frames)
        if char == _QUOTE:
            if frames and frames[-1].expecting_key:
                frames[-1].at = _key_text(token.group())
                frames[-1].expecting_key = False
        elif char in _OPEN:
            frames.append(_Frame(char == ord("{")))
            if depth is not None and len(frames) > depth:
                return _path(frames[:-1])
        elif char == ord("}") or char == ord("]"):
            if frames:
                frames.pop()
        elif char == _COMMA and frames:
            frame = frames[-1]
            if frame.is_object:
                frame.expecting_key = True
            elif isinstance(frame.at, int):
                frame.at += 1
        elif huge and char not in (_COLON, _COMMA) and not math.isfinite(_number(token.group())):
            return _path(frames)
    return _path(frames)


def _number(token: bytes) -> float:
    try:
        return float(token)
    except ValueError:
        return 0.0  # not a number at all: the decoder's message says so


def _path(frames: list[_Frame]) -> str:
    path = ""
    for frame in frames:
        if frame.is_object:
            if frame.at is None or frame.expecting_key:
                break  # between keys: the path of the object itself
            path = f"{path}.{frame.at}" if path else str(frame.at)
        else:
            path += f"[{frame.at}]"
    return path


def failure_path(text: bytes, exc: Exception, max_depth: int) -> str:
    """Where in `text` the decode failed with `exc`, as a JSON path; "" when it cannot tell."""
    if isinstance(exc, RecursionError):
        return locate(text, depth=max_depth)
    message = str(exc)
    at = _AT_BYTE.search(message)
    if at is not None:
        return locate(text, offset=int(at.group(1)))
    if "out of range" in message:
        return locate(text, huge=True)
    lone = _LONE_SURROGATE.search(text)
    return "" if lone is None else locate(text, offset=lone.start())
