"""Send-time policies as pure functions of their inputs: holdouts, quiet hours, backoff.

Pure so they can be tested from tables of cases; the dispatcher supplies the clock,
the user's traits and the randomness.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tripwire.rules import QuietHours

BACKOFF_BASE_MS = 1_000
BACKOFF_CAP_MS = 3_600_000


def in_holdout(trigger: str, user_id: str, share: float) -> bool:
    """Whether a user is in a trigger's holdout group: stable, independent per trigger."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{trigger}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def user_zone(traits: dict[str, Any], default: str) -> ZoneInfo:
    """The user's IANA time zone from `traits.timezone`, else `default`."""
    name = traits.get("timezone")
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(default)


def quiet_until(quiet: QuietHours, zone: ZoneInfo, now_ms: int) -> int | None:
    """If `now_ms` falls in the quiet hours of `zone`, the epoch ms at which they end; else None."""
    if quiet.start == quiet.end:
        return None
    local = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(zone)
    minute = local.hour * 60 + local.minute
    if quiet.start < quiet.end:
        inside = quiet.start <= minute < quiet.end
    else:  # across midnight, such as 21:00 to 08:00
        inside = minute >= quiet.start or minute < quiet.end
    if not inside:
        return None
    end_day = local.date() if minute < quiet.end else local.date() + timedelta(days=1)
    naive_end = datetime(end_day.year, end_day.month, end_day.day, quiet.end // 60, quiet.end % 60)
    end = naive_end.replace(tzinfo=zone)
    # a wall time skipped by a DST jump resolves forward, as fold=0 does
    return int(end.astimezone(UTC).timestamp() * 1000)


def backoff_ms(attempt: int, jitter: float, retry_after_s: float | None = None) -> int:
    """Delay before attempt `attempt + 1`: exponential from 1 s, capped at 1 h, half of it jittered.

    `jitter` is a number in [0, 1) the caller draws. A receiver's Retry-After wins when longer.
    """
    ceiling = min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** max(0, attempt - 1))
    delay = int(ceiling / 2 + jitter * ceiling / 2)
    if retry_after_s is not None:
        delay = max(delay, int(retry_after_s * 1000))
    return delay
