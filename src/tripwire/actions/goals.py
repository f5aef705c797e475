"""Goals: did the user do what the message was for? Recorded for held-out fires too, for lift.

A conversion is the first goal event of the fire's user with `fire_time < ts <= fire_time
+ within`. The sweep looks at each new fire (for goal events already logged) and each
new event (for fires it converts), once, so it is correct whichever arrives first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from tripwire.rules import Rules, Trigger
from tripwire.store import Goals

_decode = msgspec.json.decode


def sweep(goals: Goals, rules: Rules, now_ms: int) -> int:
    """Record the conversions found since the last sweep; returns how many."""
    with_goal = {t.id: t for t in rules.triggers if t.goal is not None}
    fire_cursor, event_cursor = goals.cursor()
    if not with_goal:
        goals.save_cursor(goals.last_fire(), goals.last_event())
        return 0
    found = 0
    for n, fire_id, trigger_id, user_id, fire_time, holdout in goals.fires_after(fire_cursor, list(with_goal)):
        goal = with_goal[trigger_id].goal
        assert goal is not None
        ids = [user_id, *goals.links_to(user_id)]
        for message_id, _ts, body in goals.events_between(ids, fire_time, fire_time + goal.within):
            if _matches(goal.pattern, _decode(body)):
                found += goals.record(fire_id, trigger_id, user_id, holdout, message_id, now_ms)
                break
        fire_cursor = n
    links = goals.links()
    names = _goal_names(with_goal.values())
    last = goals.last_event()
    for seq, goal_id, ts, body, event_user, event_anonymous in goals.events_after(event_cursor, names):
        event_cursor = seq
        event = _decode(body)
        uid = _resolve(event_user or event_anonymous or "", links)
        for trigger_id, trigger in with_goal.items():
            goal = trigger.goal
            assert goal is not None
            if not _matches(goal.pattern, event):
                continue
            for converted, held in goals.open_fires_of(trigger_id, uid, ts - goal.within, ts):
                found += goals.record(converted, trigger_id, uid, held, goal_id, now_ms)
    if names is not None and event_cursor < last and not goals.events_after(event_cursor, names, limit=1):
        event_cursor = last  # nothing a goal is about up to `last`: no need to look there again
    goals.save_cursor(fire_cursor, event_cursor)
    return found


def _goal_names(triggers: Iterable[Trigger]) -> list[str] | None:
    """Every event name a goal can match, or None when some goal may match any name."""
    names: set[str] = set()
    for trigger in triggers:
        assert trigger.goal is not None
        found = trigger.goal.pattern.names
        if found is None:
            return None
        names |= found
    return sorted(names)


def _matches(pattern: Any, event: dict[str, Any]) -> bool:
    return bool(pattern.matches(event.get("type", "track"), event.get("event"), event))


def _resolve(uid: str, links: dict[str, str]) -> str:
    seen = set()
    while uid in links and uid not in seen:
        seen.add(uid)
        uid = links[uid]
    return uid


def lift(stats: dict[str, int]) -> dict[str, float | None]:
    """Conversion rates of the treated and held-out groups, and the difference."""
    treated = stats.get("conversions", 0) / stats["fires"] if stats.get("fires") else None
    control = stats.get("holdout_conversions", 0) / stats["holdout"] if stats.get("holdout") else None
    diff = treated - control if treated is not None and control is not None else None
    return {"conversion_rate": treated, "holdout_conversion_rate": control, "lift": diff}
