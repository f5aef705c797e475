"""The event-time engine: acceptance, reference order, timers and fires.

Pure: no I/O, no clock, no randomness. Time arrives only as event timestamps and as
explicit watermark advances, so replay, the live server and the tests cannot disagree.

Accepted events wait in a heap until the watermark reaches them (`ts <= watermark`);
from then on no event can arrive that sorts before them, so they are applied in the
reference order `(timestamp, arrival)`. A timer due at `d` fires once `watermark > d`,
after every event with `ts <= d`. Every fire emitted is therefore final.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from heapq import heappop, heappush
from typing import Any, Final, Literal

from tripwire.engine import snapshot
from tripwire.engine.fire import Fire, make_fire_id
from tripwire.engine.merge import merge_users
from tripwire.engine.plan import ABSENCE, ALWAYS, CHECK, COUNT, INACTIVITY, GuardStep, Plan, TriggerPlan
from tripwire.engine.state import UNKEYED, CountList, Timer, UserState
from tripwire.events import Event
from tripwire.rules.model import ActivityGuard, Guard, Rules, TraitGuard
from tripwire.rules.where import MISSING, canonical
from tripwire.timestamps import format_ms

Decision = Literal["accepted", "late", "duplicate"]
ACCEPTED: Final = "accepted"
LATE: Final = "late"
DUPLICATE: Final = "duplicate"

NEVER: Final = -(2**62)


class Engine:
    """Decides, per user and in event time, when each trigger holds.

    Drive it with `offer` (or `ingest` for a batch) in arrival order, then `advance`
    to apply what the watermark allows; `finish` ends a replay. Each call returns
    the fires it produced, suppressed ones included, in processing order.
    """

    def __init__(
        self,
        rules: Rules,
        *,
        dedup_window: int | None = None,
        track_dirty: bool = True,
        follow_events: bool = True,
    ) -> None:
        """`dedup_window` (ms) bounds how long messageIds are remembered; None keeps all.
        `track_dirty` keeps the set of users whose state changed, for a store to save.
        With `follow_events` off (a live node, or a replay of its log) accepted events never
        move the watermark: only `advance` does, so no client's clock can push it ahead."""
        self.rules = rules
        self.follow_events = follow_events
        self.plan = Plan(rules)
        self.lateness = rules.settings.allowed_lateness
        self.dedup_window = dedup_window
        self.watermark = NEVER
        self.max_ts = NEVER
        self.users: dict[str, UserState] = {}
        self.links: dict[str, str] = {}
        self.dirty_links: dict[str, str] = {}
        self.seen: dict[str, int] = {}
        self.counts = {LATE: 0, DUPLICATE: 0}
        self.accepted = 0
        self.track_dirty = track_dirty
        self.dirty: set[str] = set()  # without track_dirty, emptied at each advance
        self._pending: list[tuple[int, int, Event]] = []  # sorted from _head on; before it, applied
        self._head = 0
        self._timers: list[tuple[int, int, str, int, Any]] = []
        self._set_aside: dict[str, int] = {}  # user -> cancel (not fire) timers due by then
        self.timers_set_aside: list[tuple[str, dict[str, Any]]] = []
        self._arrival = 0
        self._seq = 0
        self._order = 0
        self._n_triggers = len(rules.triggers)
        self._seen_order: list[tuple[int, str]] = []
        self._steps = self.plan._steps

    # -- acceptance ------------------------------------------------------------------

    def offer(self, event: Event) -> Decision:
        """Decide an arriving event: duplicate, late, or accepted (and queued)."""
        mid = event.message_id
        seen = self.seen
        if mid in seen:
            self.counts[DUPLICATE] += 1
            return DUPLICATE
        ts = event.ts
        if ts < self.watermark:
            self.counts[LATE] += 1
            return LATE
        if not event.auto_id:
            seen[mid] = ts
            if self.dedup_window is not None:
                self._seen_order.append((ts, mid))
        self._arrival = arrival = self._arrival + 1
        self._queue(ts, arrival, event)
        if ts > self.max_ts:
            self.max_ts = ts
            if self.follow_events:
                self.watermark = max(self.watermark, ts - self.lateness)
        self.accepted += 1
        return ACCEPTED

    def ingest(self, events: Iterable[Event]) -> list[Decision]:
        """Decide a batch in arrival order."""
        return [self.offer(event) for event in events]

    def force_accept(self, event: Event) -> None:
        """Queue an event a log already accepted, without deciding again (log replay)."""
        if not event.auto_id:
            self.seen[event.message_id] = event.ts
        self._arrival += 1
        self._queue(event.ts, self._arrival, event)
        if event.ts > self.max_ts:
            self.max_ts = event.ts
            if self.follow_events:
                self.watermark = max(self.watermark, event.ts - self.lateness)
        self.accepted += 1

    def withdraw(self, message_ids: set[str]) -> list[Event]:
        """Take accepted events that are still waiting out of the queue (quarantine); they
        stay remembered, so sending them again is a duplicate."""
        keep: list[tuple[int, int, Event]] = []
        taken: list[Event] = []
        for entry in self._pending[self._head :]:
            if entry[2].message_id in message_ids:
                taken.append(entry[2])
            else:
                keep.append(entry)
        if taken:
            self._pending = keep
            self._head = 0
        return taken

    def _queue(self, ts: int, arrival: int, event: Event) -> None:
        """Keep `_pending[_head:]` sorted by (ts, arrival); most events arrive in order."""
        pending = self._pending
        if not pending or ts >= pending[-1][0]:
            pending.append((ts, arrival, event))
        else:
            insort(pending, (ts, arrival, event), lo=self._head)

    # -- time --------------------------------------------------------------------------

    def advance(self, watermark: int | None = None) -> list[Fire]:
        """Raise the watermark to `watermark` (if higher), apply what it allows."""
        if watermark is not None and watermark > self.watermark:
            self.watermark = watermark
        fires: list[Fire] = []
        self._run(self.watermark, self.watermark - 1, fires)
        self._forget_old_ids()
        if self._set_aside:  # past their time, nothing more can come due by it
            self._set_aside = {uid: until for uid, until in self._set_aside.items() if until >= self.watermark}
        if not self.track_dirty:  # a set's add costs less per event than a no-op method
            self.dirty.clear()
            self.dirty_links.clear()
        return fires

    def finish(self, until: int | None = None) -> list[Fire]:
        """End of input: apply every queued event, fire timers due by max(last event, until)."""
        end = self.max_ts if until is None else max(self.max_ts, until)
        fires: list[Fire] = []
        self._run(end, end, fires)
        return fires

    def next_due(self) -> int | None:
        """The earliest time something is waiting for (a queued event or a timer)."""
        times = [self._pending[self._head][0]] if self._head < len(self._pending) else []
        if self._timers:
            times.append(self._timers[0][0])
        return min(times) if times else None

    def _run(self, event_limit: int, timer_limit: int, fires: list[Fire]) -> None:
        pending = self._pending
        head = self._head
        end = len(pending)
        timers = self._timers
        apply = self._apply
        while True:
            if head < end:
                ts, _, event = pending[head]
                if ts <= event_limit and (not timers or ts <= timers[0][0]):
                    head += 1
                    apply(event, fires)
                    continue
            if timers and timers[0][0] <= timer_limit:
                self._due(heappop(timers), fires)
            else:
                break
        if head > 4096 and head * 2 > end:
            del pending[:head]
            head = 0
        self._head = head

    def _forget_old_ids(self) -> None:
        if self.dedup_window is None or not self._seen_order:
            return
        cutoff = self.watermark - self.dedup_window
        order = self._seen_order
        drop = 0
        while drop < len(order) and order[drop][0] < cutoff:
            self.seen.pop(order[drop][1], None)
            drop += 1
        if drop:
            del order[:drop]

    # -- applying events ---------------------------------------------------------------

    def resolve(self, uid: str) -> str:
        """Follow identity links to the id whose state an id's events count for."""
        links = self.links
        while uid in links:
            uid = links[uid]
        return uid

    def _user(self, uid: str) -> UserState:
        user = self.users.get(uid)
        if user is None:
            user = self.users[uid] = UserState(uid, self._n_triggers)
        return user

    def _apply(self, event: Event, fires: list[Fire]) -> None:
        self._order += 1  # this event's place in the reference order
        type_ = event.type
        uid = event.user_id or event.anonymous_id
        assert uid is not None
        if uid in self.links:
            uid = self.resolve(uid)
        if type_ == "identify" or type_ == "alias":  # noqa: PLR1714  # faster than a set here
            self._identity(event, uid, fires)
        name = event.name
        found = self._steps.get((type_, name))
        guard_steps, steps = found if found is not None else self.plan.steps(type_, name)
        if not steps and not guard_steps:
            return
        users = self.users
        user = users.get(uid)
        if user is None:
            user = users[uid] = UserState(uid, self._n_triggers)
        self.dirty.add(uid)
        raw = event.raw
        ts = event.ts
        if guard_steps:
            self._remember(user, guard_steps, type_, name, raw, ts)
        for plan, first, second in steps:
            shape = plan.shape
            trigger = plan.trigger
            if shape == COUNT:
                if first == ALWAYS or trigger.when.matches(type_, name, raw):  # type: ignore[union-attr]  # set for counts
                    self._count(plan, user, event, fires)
            elif shape == ABSENCE:
                if second == ALWAYS or (second == CHECK and trigger.unless.matches(type_, name, raw)):  # type: ignore[union-attr]  # set for absences
                    self._close(plan, user, raw)
                if first == ALWAYS or (first == CHECK and trigger.when.matches(type_, name, raw)):  # type: ignore[union-attr]  # set for absences
                    self._open(plan, user, event)
            elif first == ALWAYS or trigger.of.matches(type_, name, raw):  # type: ignore[union-attr]  # CHECK implies of
                self._set_deadline(plan, user, ts + trigger.inactive, [event.message_id])

    def _identity(self, event: Event, uid: str, fires: list[Fire]) -> None:
        raw = event.raw
        other = raw.get("previousId") if event.type == "alias" else None
        other = other or event.anonymous_id
        if event.user_id is not None and other is not None and other != event.user_id:
            self._link(other, uid, event.ts, fires)
        if event.type == "identify":
            traits = raw.get("traits")
            if traits:
                user = self._user(uid)
                if user.traits is None:
                    user.traits = dict(traits)
                else:
                    user.traits.update(traits)
                self.dirty.add(uid)

    def _remember(
        self, user: UserState, guard_steps: tuple[GuardStep, ...], type_: str, name: str | None, raw: Any, ts: int
    ) -> None:
        slots = self.plan.guard_slots
        for g, mode, keep in guard_steps:
            if mode == CHECK and not slots[g].pattern.matches(type_, name, raw):
                continue
            history = user.history
            if history is None:
                history = user.history = {}
            times = history.get(g)
            if times is None:
                history[g] = [ts]
            else:
                times.append(ts)
                if len(times) > keep:
                    del times[0]

    # -- the three shapes --------------------------------------------------------------

    def _key(self, plan: TriggerPlan, raw: dict[str, Any]) -> tuple[Any, Any]:
        """(canonical key, key as in the event) for a keyed trigger; unkeyed share one."""
        get = plan.trigger.key_get
        if get is None:
            return UNKEYED, None
        value = get(raw)
        if value is MISSING or value is None:
            return None, None
        return canonical(value), value

    def _count(self, plan: TriggerPlan, user: UserState, event: Event, fires: list[Fire]) -> None:
        trigger = plan.trigger
        ts = event.ts
        kc, kv = self._key(plan, event.raw)
        if trigger.count == 1:
            self._fire(plan, user, kv, ts, (event.message_id,), fires)
            return
        lists = user.slots[plan.index]
        if lists is None:
            lists = user.slots[plan.index] = {}
        found = lists.get(kc)
        if found is None:
            found = lists[kc] = CountList(kv)
        found.times.append(ts)
        found.ids.append(event.message_id)
        found.orders.append(self._order)
        if trigger.within is not None:
            found.drop_until(ts - trigger.within)
        if len(found.times) >= trigger.count:
            del lists[kc]
            if not lists:
                user.slots[plan.index] = None
            self._fire(plan, user, found.key, ts, tuple(found.ids), fires)

    def _close(self, plan: TriggerPlan, user: UserState, raw: dict[str, Any]) -> None:
        windows = user.slots[plan.index]
        if windows is None:
            return
        kc, _ = self._key(plan, raw)
        if kc is None:
            windows.clear()
        else:
            windows.pop(kc, None)
        if not windows:
            user.slots[plan.index] = None

    def _open(self, plan: TriggerPlan, user: UserState, event: Event) -> None:
        trigger = plan.trigger
        assert trigger.within is not None
        kc, kv = self._key(plan, event.raw)
        windows = user.slots[plan.index]
        if windows is None:
            windows = user.slots[plan.index] = {}
        window = windows.get(kc)
        deadline = event.ts + trigger.within
        if window is None:
            self._seq += 1
            windows[kc] = Timer(kv, deadline, [event.message_id], self._seq, [self._order])
            heappush(self._timers, (deadline, self._seq, user.uid, plan.index, kc))
        elif trigger.restart:
            self._seq += 1
            window.deadline = deadline
            window.ids.append(event.message_id)
            window.seq = self._seq
            if window.orders is not None:
                window.orders.append(self._order)
            # the heap entry at the old deadline re-queues itself when it comes due

    def _set_deadline(self, plan: TriggerPlan, user: UserState, deadline: int, ids: list[str]) -> None:
        self._seq += 1
        current = user.slots[plan.index]
        if current is None:
            user.slots[plan.index] = Timer(None, deadline, ids, self._seq)
            heappush(self._timers, (deadline, self._seq, user.uid, plan.index, UNKEYED))
        else:
            current.deadline = deadline
            current.ids = ids
            current.seq = self._seq

    def _due(self, entry: tuple[int, int, str, int, Any], fires: list[Fire]) -> None:
        due, seq, uid, index, kc = entry
        user = self.users.get(uid)
        if user is None:
            return
        slot = user.slots[index]
        if slot is None:
            return
        plan = self.plan.triggers[index]
        timer = slot if plan.shape == INACTIVITY else slot.get(kc)
        if timer is None:
            return
        if timer.deadline > due or (timer.deadline == due and timer.seq > seq):
            heappush(self._timers, (timer.deadline, timer.seq, uid, index, kc))
            return
        if timer.seq != seq:
            return
        if plan.shape == INACTIVITY:
            user.slots[index] = None
        else:
            del slot[kc]
            if not slot:
                user.slots[index] = None
        self.dirty.add(uid)
        if self._set_aside and due <= self._set_aside.get(uid, NEVER):
            aside = {"trigger": plan.trigger.id, "key": timer.key, "deadline": due, "events": list(timer.ids)}
            self.timers_set_aside.append((uid, aside))
            return
        self._fire(plan, user, timer.key, due, tuple(timer.ids), fires)

    # -- fires ---------------------------------------------------------------------------

    def _fire(
        self, plan: TriggerPlan, user: UserState, key: Any, at: int, ids: tuple[str, ...], fires: list[Fire]
    ) -> None:
        trigger = plan.trigger
        suppressed = detail = None
        last = user.last_fire.get(plan.index) if user.last_fire is not None else None
        if trigger.cooldown > 0 and last is not None and at < last + trigger.cooldown:
            suppressed = "cooldown"
            detail = f"cooldown: fired at {format_ms(last)}, quiet until {format_ms(last + trigger.cooldown)}"
        else:
            for slot, guard in plan.guards:
                if not self._guard_holds(user, slot, guard, at):
                    suppressed = "guard"
                    detail = f"guard failed: {guard.text}"
                    break
        if suppressed is None and trigger.cooldown > 0:
            if user.last_fire is None:
                user.last_fire = {}
            user.last_fire[plan.index] = at
        fire_id = make_fire_id(trigger.id, user.uid, key, at, ids)
        fires.append(Fire(trigger.id, user.uid, key, at, fire_id, ids, suppressed, detail))

    def _guard_holds(self, user: UserState, slot: int, guard: Guard, at: int) -> bool:
        if isinstance(guard, TraitGuard):
            return guard.predicate(user.traits if user.traits is not None else {})
        assert isinstance(guard, ActivityGuard)
        times = user.history.get(slot) if user.history is not None else None
        since = at - guard.within
        if guard.negated:
            return not times or times[-1] < since
        need = guard.min_count
        return times is not None and len(times) >= need and times[-need] >= since

    # -- identity --------------------------------------------------------------------------

    def _link(self, other: str, uid: str, at: int, fires: list[Fire]) -> None:
        """Point `other` at `uid` and merge what `other` gathered into `uid`."""
        if self.resolve(uid) == other or self.resolve(other) == uid:
            return
        self.links[other] = uid
        self.dirty_links[other] = uid
        source = self.users.pop(other, None)
        if source is None:
            return
        self.dirty.add(other)
        self.dirty.add(uid)
        merge_users(self, source, self._user(uid), at, fires)

    # -- saving and loading ----------------------------------------------------------------

    def dump_user(self, uid: str) -> bytes | None:
        """The saved form of a user's state, or None when the engine holds none for it."""
        user = self.users.get(uid)
        if user is None or user.is_empty():
            return None
        return snapshot.dump_user(self, user)

    def load_user(self, uid: str, data: bytes) -> None:
        """Restore a user saved by `dump_user` (its timers are scheduled again)."""
        snapshot.load_user(self, uid, data)

    def dump_meta(self) -> bytes:
        """Engine-wide state: watermark and timer order (identity links are saved apart)."""
        return snapshot.dump_meta(self)

    def load_meta(self, data: bytes) -> None:
        snapshot.load_meta(self, data)

    def take_changes(self) -> tuple[set[str], dict[str, str]]:
        """The users changed and the identity links made since the last call, to be saved;
        from here on the engine counts afresh."""
        users, links = self.dirty, self.dirty_links
        self.dirty = set()
        self.dirty_links = {}
        if not self.track_dirty:
            return set(), {}
        return users, links

    def with_rules(self, rules: Rules) -> Engine:
        """This engine's state under other rules (a reload): users, links, timers, dedup
        memory and waiting events carry over; a trigger kept unchanged keeps its state. The
        users whose saved state the change touches are marked changed, so they are saved."""
        new = Engine(
            rules,
            dedup_window=None if self.dedup_window is None else rules.settings.dedup_window,
            track_dirty=self.track_dirty,
            follow_events=self.follow_events,
        )
        new.load_meta(self.dump_meta())
        new.links = self.links
        for uid in self.users:
            data = self.dump_user(uid)
            if data is not None:
                new.load_user(uid, data)
        new.seen = self.seen
        new._seen_order = self._seen_order
        for event in self.pending_events():
            new.force_accept(event)
        new.accepted = self.accepted
        new.counts = self.counts
        new.dirty = self._touched_by(new) | self.dirty
        new.dirty_links = self.dirty_links
        return new

    def _touched_by(self, new: Engine) -> set[str]:
        """The users whose saved state moving to `new`'s rules changes: those holding state
        of a trigger (or a guard) that was changed or removed. Only they are saved again."""
        kept = {(p.trigger.id, p.trigger.fingerprint) for p in new.plan.triggers}
        gone = {p.index for p in self.plan.triggers if (p.trigger.id, p.trigger.fingerprint) not in kept}
        patterns = {slot.pattern.text for slot in new.plan.guard_slots}
        gone_guards = {g for g, slot in enumerate(self.plan.guard_slots) if slot.pattern.text not in patterns}
        touched = set()
        for uid, user in self.users.items():
            if (
                any(user.slots[i] is not None for i in gone)
                or (user.last_fire is not None and not gone.isdisjoint(user.last_fire))
                or (user.history is not None and not gone_guards.isdisjoint(user.history))
            ):
                touched.add(uid)
        return touched

    def users_due(self, until: int) -> list[str]:
        """Users with a timer due by `until`, in the order they come due (fault isolation)."""
        due: dict[str, None] = {}
        for deadline, _, uid, _, _ in sorted(self._timers):
            if deadline > until:
                break
            due.setdefault(uid)
        return list(due)

    def set_timers_aside(self, uid: str, until: int) -> None:
        """From now on, `uid`'s timers due by `until` are cancelled instead of fired (their
        fire cannot be written); each one cancelled is listed in `timers_set_aside`."""
        self._set_aside[uid] = max(until, self._set_aside.get(uid, until))

    def forget(self, message_id: str) -> None:
        """Let a messageId be accepted again (a quarantined event sent through once more)."""
        self.seen.pop(message_id, None)

    def remember(self, message_id: str, ts: int) -> None:
        """Mark a messageId as accepted (restoring dedup memory from a log)."""
        self.seen[message_id] = ts
        if self.dedup_window is not None:
            self._seen_order.append((ts, message_id))

    # -- inspection ------------------------------------------------------------------------

    def pending_events(self) -> list[Event]:
        """Accepted events the watermark has not reached yet, in reference order."""
        return [event for _, _, event in self._pending[self._head :]]

    def pending_count(self) -> int:
        return len(self._pending) - self._head

    def timer_count(self) -> int:
        return len(self._timers)
