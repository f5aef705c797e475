"""Store rows turned into the JSON the admin API and `tripwire fires` show."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import msgspec

from tripwire.engine.snapshot import describe_user
from tripwire.pipeline import quarantine_kind
from tripwire.rules import Rules
from tripwire.store import DeliveryRow, FireRow, LogRow, Outbox, QuarantineRow, Store
from tripwire.timestamps import format_ms

_decode = msgspec.json.decode


def fire(row: FireRow) -> dict[str, Any]:
    """SPEC §4 fields, plus why a suppressed fire was suppressed and when it was emitted."""
    return {
        "trigger": row.trigger,
        "user_id": row.user_id,
        "key": row.key,
        "fire_time": format_ms(row.fire_time),
        "fire_id": row.fire_id,
        "events": list(row.events),
        "suppressed": row.suppressed,
        "detail": row.detail,
        "emitted_at": format_ms(row.emitted_at),
        "holdout": row.holdout,
    }


def event(row: LogRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "message_id": row.message_id,
        "decision": row.decision,
        "received_at": format_ms(row.received_at),
        "event": _decode(row.body),
    }


def quarantined(row: QuarantineRow) -> dict[str, Any]:
    """A quarantined event (or a user's timers set aside): why, when, what was kept, and
    what a retry decided."""
    kind = quarantine_kind(row)
    return {
        "id": row.id,
        "kind": kind,
        "message_id": row.message_id,
        "user_id": row.user_id,
        "anonymous_id": row.anonymous_id,
        "timestamp": _time(row.ts),
        "quarantined_at": _time(row.quarantined_at),
        "reason": row.reason,
        "retried_at": None if row.retried_at is None else _time(row.retried_at),
        "retry_decision": row.retry_decision,
        **({"event": _decode(row.body)} if kind == "event" else {"timers": _decode(row.body)["timers"]}),
    }


def _time(ms: int) -> str | int:
    """ISO-8601 where the calendar can show it; the raw milliseconds otherwise."""
    try:
        return format_ms(ms)
    except (OverflowError, ValueError):
        return ms


def triggers(rules: Rules, counts: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for trigger in rules.triggers:
        fired, suppressed = counts.get(trigger.id, (0, 0))
        out.append(
            {
                "id": trigger.id,
                "shape": trigger.shape,
                "description": trigger.description,
                "actions": list(trigger.actions),
                "fires": fired,
                "suppressed": suppressed,
            }
        )
    return out


def _explain(row: FireRow) -> str:
    events = ", ".join(row.events)
    if row.holdout:
        return f"fired at {format_ms(row.fire_time)} because of {events}; held out, so nothing was sent"
    if row.suppressed is None:
        return f"fired at {format_ms(row.fire_time)} because of {events}"
    return f"suppressed at {format_ms(row.fire_time)} ({row.detail or row.suppressed}); events {events}"


def delivery(row: DeliveryRow) -> dict[str, Any]:
    """A delivery as people read it: times in ISO-8601, and the reason it is held, dropped or dead."""
    out = asdict(row)
    for name in ("next_at", "created_at", "updated_at", "delivered_at"):
        if out[name] is not None:
            out[name] = format_ms(out[name])
    return out


def user(store: Store, rules: Rules, uid: str, outbox: Outbox | None = None) -> dict[str, Any] | None:
    """Everything known of a user: traits, open windows and counts, recent events, fires and
    what became of each fire's deliveries (sent, held, dropped, dead, and why)."""
    data = store.user_state(uid)
    linked = store.links_to(uid)
    recent = store.events(users=[uid, *linked], limit=50)
    fires = store.fires(user=uid, limit=100)
    if data is None and not recent and not fires:
        return None
    state = describe_user(data) if data is not None else {"traits": {}, "triggers": {}, "last_fire": {}}
    shapes = {t.id: t for t in rules.triggers}
    windows, counting = [], []
    for trigger_id, items in state["triggers"].items():
        trigger = shapes.get(trigger_id)
        for item in items:
            if item.get("deadline") is not None:
                kind = "inactivity" if trigger is not None and trigger.shape == "inactivity" else "absence"
                windows.append(
                    {
                        "trigger": trigger_id,
                        "kind": kind,
                        "key": item["key"],
                        "deadline": format_ms(item["deadline"]),
                        "events": item.get("ids") or [],
                    }
                )
            else:
                counting.append(
                    {
                        "trigger": trigger_id,
                        "key": item["key"],
                        "count": len(item.get("times") or []),
                        "needs": trigger.count if trigger is not None else None,
                        "events": item.get("ids") or [],
                    }
                )
    fired = [f for f in fires if f.suppressed is None]
    return {
        "user_id": uid,
        "linked_ids": linked,
        "traits": state["traits"],
        "open_windows": windows,
        "counting": counting,
        "last_fire": {k: format_ms(v) for k, v in state["last_fire"].items()},
        "counts": {"recent_events": len(recent), "fires": len(fired), "suppressed": len(fires) - len(fired)},
        "recent_events": [event(row) for row in recent],
        "fires": [{**fire(f), "explanation": _explain(f)} for f in fires],
        "deliveries": [delivery(row) for row in outbox.find(user=uid, limit=100)] if outbox is not None else [],
    }
