"""ISO-8601 timestamps as integer milliseconds since the Unix epoch (UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# fromisoformat accepts at most six fractional digits; finer ones are cut first.
_FINE_FRACTION = re.compile(r"(\.\d{3})\d+")
# The minute and the second of the common `2026-03-01T12:34:56.789Z` form, by their
# first 16 and 19 characters: events come in bursts within the same second.
_MINUTES: dict[str, int] = {}
_SECONDS: dict[str, int] = {}
_CACHE_MAX = 100_000


def _slow_parse_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        cut = _FINE_FRACTION.sub(r"\1", text, count=1)
        if cut == text:
            raise
        moment = datetime.fromisoformat(cut)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1_000 + delta.microseconds // 1_000


def parse_ms(text: str) -> int:
    """Parse an ISO-8601 timestamp to epoch milliseconds, cutting finer digits.

    A timestamp without an offset is UTC. Raises ValueError when it is not ISO-8601.
    The form SDKs send (`2026-03-01T12:34:56.789Z`) takes a fast path.
    """
    if len(text) == 24 and text[23] == "Z" and text[19] == ".":
        millis = text[20:23]
        second = _SECONDS.get(text[:19])
        if second is not None and millis.isdigit():
            return second + int(millis)
        seconds = text[17:19]
        if text[16] == ":" and seconds.isdigit() and millis.isdigit() and seconds < "60":
            minute = _MINUTES.get(text[:16])
            if minute is None:
                minute = _slow_parse_ms(text[:16] + "Z")
                if len(_MINUTES) >= _CACHE_MAX:
                    _MINUTES.clear()
                _MINUTES[text[:16]] = minute
            second = minute + int(seconds) * 1_000
            if len(_SECONDS) >= _CACHE_MAX:
                _SECONDS.clear()
            _SECONDS[text[:19]] = second
            return second + int(millis)
    return _slow_parse_ms(text)


def format_ms(ms: int) -> str:
    """Format epoch milliseconds as ``2026-03-01T00:00:09.000Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
