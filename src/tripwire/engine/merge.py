"""Merging an anonymous user's state into the user it is linked to (see docs/semantics.md)."""

from __future__ import annotations

from heapq import heappush
from typing import TYPE_CHECKING, Any

from tripwire.engine.plan import ABSENCE, COUNT, INACTIVITY
from tripwire.engine.state import UNKEYED, CountList, Timer, UserState

if TYPE_CHECKING:
    from tripwire.engine.core import Engine
    from tripwire.engine.fire import Fire


def merge_users(engine: Engine, source: UserState, target: UserState, at: int, fires: list[Fire]) -> None:
    """Fold `source` into `target` at time `at`, as if both histories were one user's."""
    aside = engine._set_aside.get(source.uid) if engine._set_aside else None
    if aside is not None:  # the timers set aside move with the user (fault isolation)
        engine._set_aside[target.uid] = max(aside, engine._set_aside.get(target.uid, aside))
    if source.traits:
        merged = dict(source.traits)
        merged.update(target.traits or {})
        target.traits = merged
    if source.history:
        history = target.history if target.history is not None else {}
        for g, times in source.history.items():
            keep = engine.plan.guard_slots[g].keep
            history[g] = sorted([*history.get(g, []), *times])[-keep:]
        target.history = history
    if source.last_fire:
        last = target.last_fire if target.last_fire is not None else {}
        for index, when in source.last_fire.items():
            last[index] = max(when, last.get(index, when))
        target.last_fire = last
    for plan in engine.plan.triggers:
        mine = source.slots[plan.index]
        if mine is None:
            continue
        if plan.shape == INACTIVITY:
            theirs = target.slots[plan.index]
            # the later activity in the reference order wins; `seq` breaks a tie of deadlines
            if theirs is None or (mine.deadline, mine.seq) > (theirs.deadline, theirs.seq):
                target.slots[plan.index] = mine
                _schedule(engine, target, plan.index, UNKEYED, mine)
            continue
        slots: dict[Any, Any] = target.slots[plan.index] or {}
        target.slots[plan.index] = slots
        for kc, item in mine.items():
            other = slots.get(kc)
            if plan.shape == COUNT:
                slots[kc] = item if other is None else _merge_counts(other, item)
            elif plan.shape == ABSENCE:
                window = item if other is None else _merge_windows(other, item, plan.trigger.restart)
                slots[kc] = window
                if window is not other:
                    _schedule(engine, target, plan.index, kc, window)
        if plan.shape == COUNT:
            trigger = plan.trigger
            for kc in list(slots):
                found = slots[kc]
                if trigger.within is not None:
                    found.drop_until(at - trigger.within)
                if len(found.times) >= trigger.count:
                    del slots[kc]
                    engine._fire(plan, target, found.key, at, tuple(found.ids), fires)
                elif not found.times:
                    del slots[kc]
        if not slots:
            target.slots[plan.index] = None


def _merge_counts(first: CountList, second: CountList) -> CountList:
    """Both lists as one, in the reference order of their events."""
    entries = sorted(
        [
            *zip(first.orders, first.times, first.ids, strict=True),
            *zip(second.orders, second.times, second.ids, strict=True),
        ]
    )
    earlier = first if not second.orders or (first.orders and first.orders[0] < second.orders[0]) else second
    merged = CountList(earlier.key)
    merged.orders = [o for o, _, _ in entries]
    merged.times = [t for _, t, _ in entries]
    merged.ids = [i for _, _, i in entries]
    return merged


def _merge_windows(theirs: Timer, mine: Timer, restart: bool) -> Timer:
    """Without restart the window opened first wins; with it, the last move and every `when` event."""
    their_orders, my_orders = theirs.orders or [0], mine.orders or [0]
    first = theirs if their_orders[0] < my_orders[0] else mine
    if not restart:
        return first
    last = theirs if (theirs.deadline, theirs.seq) > (mine.deadline, mine.seq) else mine
    entries = sorted([*zip(their_orders, theirs.ids, strict=True), *zip(my_orders, mine.ids, strict=True)])
    return Timer(first.key, last.deadline, [i for _, i in entries], last.seq, [o for o, _ in entries])


def _schedule(engine: Engine, user: UserState, index: int, kc: Any, timer: Timer) -> None:
    heappush(engine._timers, (timer.deadline, timer.seq, user.uid, index, kc))
