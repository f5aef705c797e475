"""The regular expressions of `matches`, checked before they meet hostile event data.

Python's `re` backtracks and has no time limit, so a pattern such as `(a+)+$` takes
exponential time on an event string such as `aaaa…!`, and events come from anyone. A
rules file is refused when a pattern repeats something that can itself match in more
than one way: a repeat inside a repeat (`(a+)+`, `(\\w+\\.)*`) or an alternation inside a
repeat (`(a|ab)*`). Possessive repeats (`a++`) and atomic groups (`(?>...)`) never
backtrack, so they are the way to write such a pattern.
"""

from __future__ import annotations

import re
from re import _parser  # type: ignore[attr-defined]  # the parser `re` compiles with; it has no stub
from typing import Any, Final

MAX_PATTERN_LENGTH: Final = 1000
_REPEATS: Final = frozenset({_parser.MAX_REPEAT, _parser.MIN_REPEAT})
_FIX: Final = "make the inner repeat possessive (a++, a*+) or the group atomic ((?>...)+)"


class PatternError(ValueError):
    """A `matches` pattern that cannot be used; the message says why and what to write instead."""


def check_pattern(pattern: str) -> None:
    """Raise PatternError unless `pattern` compiles and cannot backtrack exponentially."""
    if len(pattern) > MAX_PATTERN_LENGTH:  # the parser recurses per group
        raise PatternError(f"the pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        re.compile(pattern)
        risky = _risky(_parser.parse(pattern), inside_repeat=False)
    except re.error as exc:
        raise PatternError(f"not a valid regular expression: {exc}") from None
    except (RecursionError, OverflowError):
        raise PatternError("not a valid regular expression: nested or repeated too much") from None
    if risky:
        raise PatternError(f"{risky} can backtrack for a very long time on some event values; {_FIX}")


def _risky(items: Any, *, inside_repeat: bool) -> str | None:
    """What makes `items` backtrack exponentially (a description), or None."""
    for op, arg in items:
        if op in _REPEATS:
            low, high, body = arg
            if inside_repeat and low != high:  # a fixed count such as x{3} matches one way only
                return "a repeat inside a repeat"
            found = _risky(body, inside_repeat=inside_repeat or high > 1)
        elif op == _parser.BRANCH:
            if inside_repeat:
                return "an alternation (|) inside a repeat"
            found = _first(_risky(branch, inside_repeat=False) for branch in arg[1])
        elif op == _parser.SUBPATTERN:
            found = _risky(arg[3], inside_repeat=inside_repeat)
        elif op in (_parser.ASSERT, _parser.ASSERT_NOT):
            found = _risky(arg[1], inside_repeat=inside_repeat)
        elif op == _parser.GROUPREF_EXISTS:
            found = _first(_risky(p, inside_repeat=inside_repeat) for p in arg[1:] if p is not None)
        else:  # literals, classes, anchors; atomic groups and possessive repeats never backtrack
            found = None
        if found:
            return found
    return None


def _first(found: Any) -> str | None:
    return next((f for f in found if f), None)
