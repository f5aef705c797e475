"""Goals: did the user do what the message was for? Recorded for held-out fires too, for lift."""

from __future__ import annotations

import msgspec

from tripwire.rules import Rules
from tripwire.store.goals import SqliteGoals

_decode = msgspec.json.decode
# fires are looked at until this long after their goal period ends, for goal events that arrive late
SETTLE_MS = 3_600_000


def sweep(goals: SqliteGoals, rules: Rules, now_ms: int) -> int:
    """Record every conversion not recorded yet; returns how many. Idempotent, so safe to repeat."""
    found = 0
    for trigger in rules.triggers:
        goal = trigger.goal
        if goal is None:
            continue
        for fire_id, user_id, fire_time, holdout in goals.open_fires(trigger.id, now_ms - goal.within - SETTLE_MS):
            ids = [user_id, *goals.links_to(user_id)]
            for message_id, _ts, body in goals.events_between(ids, fire_time, fire_time + goal.within):
                event = _decode(body)
                name = event.get("event")
                if goal.pattern.matches(event.get("type", "track"), name, event):
                    goals.record(fire_id, trigger.id, user_id, holdout, message_id, now_ms)
                    found += 1
                    break
    return found


def lift(stats: dict[str, int]) -> dict[str, float | None]:
    """Conversion rates of the treated and held-out groups, and the difference."""
    treated = stats.get("conversions", 0) / stats["fires"] if stats.get("fires") else None
    control = stats.get("holdout_conversions", 0) / stats["holdout"] if stats.get("holdout") else None
    diff = treated - control if treated is not None and control is not None else None
    return {"conversion_rate": treated, "holdout_conversion_rate": control, "lift": diff}
