"""ISO-8601 timestamps as integer milliseconds since the Unix epoch (UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# fromisoformat accepts at most six fractional digits; finer ones are cut first.
_FINE_FRACTION = re.compile(r"(\.\d{3})\d+")


def parse_ms(text: str) -> int:
    """Parse an ISO-8601 timestamp to epoch milliseconds, cutting finer digits.

    A timestamp without an offset is UTC. Raises ValueError when it is not ISO-8601.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        if not isinstance(text, str):
            raise
        cut = _FINE_FRACTION.sub(r"\1", text, count=1)
        if cut == text:
            raise
        moment = datetime.fromisoformat(cut)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1_000 + delta.microseconds // 1_000


def format_ms(ms: int) -> str:
    """Format epoch milliseconds as ``2026-03-01T00:00:09.000Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
