"""Saving and loading engine state, per user and for the engine as a whole.

State is stored by trigger id and fingerprint, so after the rules change the state of
unchanged triggers is kept and the state of changed or removed triggers is dropped.
"""

from __future__ import annotations

from heapq import heappush
from typing import TYPE_CHECKING, Any

import msgspec

from tripwire.engine.plan import INACTIVITY
from tripwire.engine.state import UNKEYED, CountList, Timer, UserState
from tripwire.rules.where import canonical

if TYPE_CHECKING:
    from tripwire.engine.core import Engine


class _Item(msgspec.Struct, array_like=True, omit_defaults=True):
    key: Any
    times: list[int] | None = None  # a count list
    ids: list[str] | None = None
    deadline: int | None = None  # a window or an inactivity deadline
    seq: int | None = None
    orders: list[int] | None = None  # places in the reference order (count lists, windows)


class _Slot(msgspec.Struct, array_like=True):
    trigger: str
    fingerprint: str
    items: list[_Item]


class _User(msgspec.Struct, omit_defaults=True):
    traits: dict[str, Any] | None = None
    slots: list[_Slot] = []
    history: dict[str, list[int]] = {}
    last_fire: dict[str, int] = {}


class _Meta(msgspec.Struct):
    watermark: int
    max_ts: int
    seq: int
    order: int = 0


_user_encoder = msgspec.msgpack.Encoder()
_user_decoder = msgspec.msgpack.Decoder(_User)
_meta_decoder = msgspec.msgpack.Decoder(_Meta)


def dump_user(engine: Engine, user: UserState) -> bytes:
    """A user's state as compact bytes (MessagePack)."""
    plans = engine.plan.triggers
    slots = []
    for index, slot in enumerate(user.slots):
        if slot is None:
            continue
        trigger = plans[index].trigger
        values = [slot] if plans[index].shape == INACTIVITY else list(slot.values())
        items = [
            _Item(v.key, times=v.times, ids=v.ids, orders=v.orders)
            if isinstance(v, CountList)
            else _Item(v.key, ids=v.ids, deadline=v.deadline, seq=v.seq, orders=v.orders)
            for v in values
        ]
        slots.append(_Slot(trigger.id, trigger.fingerprint, items))
    guard_slots = engine.plan.guard_slots
    history = {guard_slots[g].pattern.text: times for g, times in (user.history or {}).items()}
    last_fire = {plans[i].trigger.id: at for i, at in (user.last_fire or {}).items()}
    return _user_encoder.encode(_User(user.traits, slots, history, last_fire))


def load_user(engine: Engine, uid: str, data: bytes) -> UserState:
    """Restore a user saved by `dump_user` into `engine`, scheduling its timers."""
    saved = _user_decoder.decode(data)
    plans = {p.trigger.id: p for p in engine.plan.triggers}
    user = UserState(uid, len(engine.plan.triggers))
    user.traits = saved.traits
    for slot in saved.slots:
        plan = plans.get(slot.trigger)
        if plan is None or plan.trigger.fingerprint != slot.fingerprint:
            continue
        keyed: dict[Any, Any] = {}
        for item in slot.items:
            kc = UNKEYED if plan.trigger.key is None else (None if item.key is None else canonical(item.key))
            if item.deadline is None:
                found = CountList(item.key)
                found.times = item.times or []
                found.ids = item.ids or []
                found.orders = item.orders or [0] * len(found.ids)
                keyed[kc] = found
                continue
            orders = None if plan.shape == INACTIVITY else (item.orders or [0] * len(item.ids or []))
            timer = Timer(item.key, item.deadline, item.ids or [], item.seq or 0, orders)
            keyed[kc] = timer
            heappush(engine._timers, (timer.deadline, timer.seq, uid, plan.index, kc))
        if plan.shape == INACTIVITY:
            user.slots[plan.index] = keyed.get(UNKEYED)
        else:
            user.slots[plan.index] = keyed or None
    by_text = {slot.pattern.text: g for g, slot in enumerate(engine.plan.guard_slots)}
    history = {by_text[text]: times for text, times in saved.history.items() if text in by_text}
    user.history = history or None
    last_fire = {plans[t].index: at for t, at in saved.last_fire.items() if t in plans}
    user.last_fire = last_fire or None
    engine.users[uid] = user
    return user


def dump_meta(engine: Engine) -> bytes:
    """The engine-wide state: watermark and the timer sequence."""
    return _user_encoder.encode(_Meta(engine.watermark, engine.max_ts, engine._seq, engine._order))


def saved_watermark(data: bytes) -> int:
    """The watermark in saved engine meta."""
    return _meta_decoder.decode(data).watermark


def load_meta(engine: Engine, data: bytes) -> None:
    meta = _meta_decoder.decode(data)
    engine.watermark = meta.watermark
    engine.max_ts = meta.max_ts
    engine._seq = meta.seq
    engine._order = meta.order


def describe_user(data: bytes) -> dict[str, Any]:
    """A saved user state as plain data, for people and the admin API."""
    saved = _user_decoder.decode(data)
    return {
        "traits": saved.traits or {},
        "triggers": {slot.trigger: [msgspec.structs.asdict(item) for item in slot.items] for slot in saved.slots},
        "last_fire": saved.last_fire,
    }
