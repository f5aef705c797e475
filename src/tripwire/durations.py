"""Durations in the rules language: a whole number and a unit, kept as milliseconds."""

from __future__ import annotations

import re

from tripwire.errors import DurationError

UNITS_MS = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")

ALLOWED = "a whole number and a unit: 500ms, 30s, 15m, 24h, 7d, 2w"


def parse_duration(text: object) -> int:
    """Return the duration `text` (such as ``24h``) in milliseconds."""
    if not isinstance(text, str):
        raise DurationError(f"expected a duration string, got {text!r}; use {ALLOWED}")
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise DurationError(f"{text!r} is not a duration; use {ALLOWED}")
    return int(match.group(1)) * UNITS_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact spelling of `ms`, the inverse of `parse_duration`."""
    for unit, size in sorted(UNITS_MS.items(), key=lambda item: -item[1]):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
