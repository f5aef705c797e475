"""A brute-force reference model of the tripwire contract (SPEC §1-§4).

Written from SPEC.md and docs/semantics.md only, on purpose: it imports nothing from
`tripwire`, so that the property test in test_property.py compares two independent
readings of the contract. It is meant to be obviously correct, not fast:

1. acceptance is decided in arrival order (a bad event is dropped and counted; a
   messageId already accepted is a duplicate; otherwise an event with
   `timestamp < watermark` is late; only accepted events move the watermark, which
   starts at minus infinity, and are remembered for deduplication);
2. accepted events are sorted by (timestamp, arrival index), the reference order;
3. the events are applied one by one, and before each event every timer due strictly
   before its timestamp fires, earliest first and, within one millisecond, in the order
   the timers were set; at the end every timer due at or before
   max(largest accepted event time, until) fires.

Timers are not kept in a queue: the next one is found by scanning all open windows and
inactivity deadlines, every time.

Identity (docs/semantics.md "Identity: linking and merging"): an identify with both
ids, or an alias, links the other id to the userId at its place in the reference order;
the linked id's state is merged into the user's then, by the merge table of that page.
The model assumes the generated streams never use a userId as a linked (other) id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

ACTIVITY_TYPES = ("track", "page", "screen")

# ---------------------------------------------------------------------------- time

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def duration_ms(text: str) -> int:
    """`500ms`, `30s`, `15m`, `24h`, `7d`, `2w` -> milliseconds."""
    m = re.fullmatch(r"([0-9]+)(ms|s|m|h|d|w)", text)
    if m is None:
        raise ValueError(f"bad duration {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def time_ms(text: str) -> int:
    """ISO-8601 -> epoch milliseconds; finer digits than ms are cut; no offset is UTC."""
    # Cut the fraction to at most 3 digits before parsing (fromisoformat takes <= 6).
    text = re.sub(r"(\.[0-9]{3})[0-9]+", r"\1", text, count=1)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def format_ms(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


SKEW_TOLERANCE_MS = 2_000  # clock_skew_tolerance's default; the generated rules never set it


def event_time(event: dict[str, Any]) -> int:
    """The (skew-corrected) event time in ms (SPEC §1)."""
    if "sentAt" in event and "receivedAt" in event:
        original = event.get("originalTimestamp", event.get("timestamp"))
        received = time_ms(event["receivedAt"])
        sent = time_ms(event["sentAt"])
        if abs(received - sent) <= SKEW_TOLERANCE_MS:  # a good client clock keeps its timestamp
            return time_ms(event["timestamp"]) if "timestamp" in event else time_ms(original)
        return received - (sent - time_ms(original))
    return time_ms(event["timestamp"])


# ------------------------------------------------------------------ JSON semantics


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def json_eq(a: Any, b: Any) -> bool:
    """Equality as JSON has it: true != 1, 1 == 1.0, "5" != 5."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(json_eq(a[k], b[k]) for k in a)
    return False


def resolve(obj: Any, path: str) -> Any:
    """Value at a dotted path, or MISSING. A digit segment indexes a list."""
    cur = obj
    for seg in path.split("."):
        if isinstance(cur, dict):
            if seg not in cur:
                return MISSING
            cur = cur[seg]
        elif isinstance(cur, list) and re.fullmatch(r"[0-9]+", seg):
            i = int(seg)
            if i >= len(cur):
                return MISSING
            cur = cur[i]
        else:
            return MISSING
    return cur


def op_holds(op: str, value: Any, arg: Any) -> bool:
    if value is MISSING:
        # A missing path is false for every operator but `exists: false` and `ne`.
        return (op == "exists" and arg is False) or op == "ne"
    if op == "exists":
        return arg is True
    if op == "eq":
        return json_eq(value, arg)
    if op == "ne":
        return not json_eq(value, arg)
    if op in ("gt", "gte", "lt", "lte"):
        comparable = (is_number(value) and is_number(arg)) or (isinstance(value, str) and isinstance(arg, str))
        if not comparable:
            return False
        return {
            "gt": value > arg,
            "gte": value >= arg,
            "lt": value < arg,
            "lte": value <= arg,
        }[op]
    if op in ("in", "not_in"):
        items = arg if isinstance(arg, list) else [arg]
        found = any(json_eq(value, item) for item in items)
        return found if op == "in" else not found
    if op == "contains":
        if isinstance(value, str):
            return isinstance(arg, str) and arg in value
        if isinstance(value, list):
            return any(json_eq(item, arg) for item in value)
        return False
    if op == "starts_with":
        return isinstance(value, str) and isinstance(arg, str) and value.startswith(arg)
    if op == "ends_with":
        return isinstance(value, str) and isinstance(arg, str) and value.endswith(arg)
    if op == "matches":
        return isinstance(value, str) and re.search(arg, value) is not None
    raise ValueError(f"unknown operator {op!r}")


def value_holds(spec: Any, value: Any) -> bool:
    """A mapping is a set of operators (ANDed); anything else is equality."""
    if isinstance(spec, dict):
        return all(op_holds(op, value, arg) for op, arg in spec.items())
    return op_holds("eq", value, spec)


def where_holds(where: dict[str, Any], obj: Any) -> bool:
    for k, spec in where.items():
        if k == "any":
            ok = any(where_holds(w, obj) for w in spec)
        elif k == "all":
            ok = all(where_holds(w, obj) for w in spec)
        elif k == "not":
            ok = not where_holds(spec, obj)
        else:
            ok = value_holds(spec, resolve(obj, k))
        if not ok:
            return False
    return True


# -------------------------------------------------------------------- events


def event_type(event: dict[str, Any]) -> str:
    t = event.get("type")
    if t is None and "event" in event:
        return "track"
    return t  # type: ignore[return-value]


def is_activity(event: dict[str, Any]) -> bool:
    return event_type(event) in ACTIVITY_TYPES


def own_id(event: dict[str, Any]) -> str:
    return event["userId"] if event.get("userId") else event["anonymousId"]


def link_of(event: dict[str, Any]) -> tuple[str, str] | None:
    """(other id, userId) when the event links two ids, else None."""
    user = event.get("userId")
    if not user:
        return None
    if event_type(event) == "identify" and event.get("anonymousId"):
        return event["anonymousId"], user
    if event_type(event) == "alias":
        other = event.get("previousId") or event.get("anonymousId")
        if other:
            return other, user
    return None


def matcher_holds(matcher: Any, event: dict[str, Any]) -> bool:
    """A name, a list of matchers, or {event, type, where} (all given keys hold)."""
    if isinstance(matcher, str):
        return event.get("event") == matcher
    if isinstance(matcher, list):
        return any(matcher_holds(m, event) for m in matcher)
    if "event" in matcher:
        names = matcher["event"] if isinstance(matcher["event"], list) else [matcher["event"]]
        if event.get("event") not in names:
            return False
    if "type" in matcher:
        types = matcher["type"] if isinstance(matcher["type"], list) else [matcher["type"]]
        if event_type(event) not in types:
            return False
    return not ("where" in matcher and not where_holds(matcher["where"], event))


def activity_matcher_holds(matcher: Any, event: dict[str, Any]) -> bool:
    """`of`, `did`, `did_not` look at activity events only."""
    return is_activity(event) and matcher_holds(matcher, event)


# -------------------------------------------------------------------- model


@dataclass
class Trigger:
    name: str
    shape: str  # "count" | "absence" | "inactivity"
    spec: dict[str, Any]
    within: int | None = None
    count: int = 1
    inactive: int = 0
    cooldown: int | None = None
    key: str | None = None


def load_triggers(rules: dict[str, Any]) -> tuple[int, list[Trigger]]:
    settings = rules.get("settings") or {}
    lateness = duration_ms(settings.get("allowed_lateness", "5s"))
    triggers = []
    for name, spec in (rules.get("triggers") or {}).items():
        if "inactive" in spec:
            shape = "inactivity"
        elif "unless" in spec:
            shape = "absence"
        else:
            shape = "count"
        t = Trigger(name=name, shape=shape, spec=spec)
        if "within" in spec:
            t.within = duration_ms(spec["within"])
        t.count = spec.get("count", 1)
        if "inactive" in spec:
            t.inactive = duration_ms(spec["inactive"])
        if "cooldown" in spec:
            t.cooldown = duration_ms(spec["cooldown"])
        t.key = spec.get("key")
        triggers.append(t)
    return lateness, triggers


@dataclass
class Window:
    key: Any
    deadline: int
    seq: int
    events: list[str]


@dataclass
class Deadline:
    deadline: int
    seq: int
    event: str


@dataclass
class Model:
    triggers: list[Trigger]
    traits: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    # (trigger, user) -> list of count entries (time, messageId, key value); one list per key
    counts: dict[tuple[str, str], list[list[tuple[int, str, Any]]]] = field(default_factory=dict)
    windows: dict[tuple[str, str], list[Window]] = field(default_factory=dict)
    inactivity: dict[tuple[str, str], Deadline] = field(default_factory=dict)
    last_fire: dict[tuple[str, str], int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # linked id -> user id
    order: dict[str, tuple[int, int]] = field(default_factory=dict)  # messageId -> ref order
    seq: int = 0
    fires: list[dict[str, Any]] = field(default_factory=list)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------- fires

    def guard_holds(self, guard: dict[str, Any], user: str, t: int) -> bool:
        if "trait" in guard:
            value = resolve(self.traits.get(user, {}), guard["trait"])
            ops = {k: v for k, v in guard.items() if k != "trait"}
            return all(op_holds(op, value, arg) for op, arg in ops.items())
        within = duration_ms(guard["within"])
        matcher = guard["did"] if "did" in guard else guard["did_not"]
        n = sum(
            1 for ts, ev in self.history.get(user, []) if t - within <= ts <= t and activity_matcher_holds(matcher, ev)
        )
        if "did" in guard:
            return n >= guard.get("min_count", 1)
        return n == 0

    def fire(self, trig: Trigger, user: str, key: Any, t: int, events: list[str]) -> None:
        suppressed = None
        last = self.last_fire.get((trig.name, user))
        if trig.cooldown is not None and last is not None and t < last + trig.cooldown:
            suppressed = "cooldown"
        elif not all(self.guard_holds(g, user, t) for g in trig.spec.get("if", [])):
            suppressed = "guard"
        if suppressed is None:
            self.last_fire[(trig.name, user)] = t
        self.fires.append(
            {
                "trigger": trig.name,
                "user_id": user,
                "key": key,
                "fire_time": format_ms(t),
                "events": list(events),
                "suppressed": suppressed,
            }
        )

    # ------------------------------------------------------------- timers

    def next_timer(self, limit: int, inclusive: bool) -> tuple[int, int, Trigger, str, Any] | None:
        """The earliest (due, seq) timer due before `limit` (or at it, if inclusive)."""
        best = None
        for trig in self.triggers:
            for (name, user), windows in self.windows.items():
                if name != trig.name:
                    continue
                for w in windows:
                    cand = (w.deadline, w.seq, trig, user, w)
                    if best is None or cand[:2] < best[:2]:
                        best = cand
            for (name, user), d in self.inactivity.items():
                if name != trig.name:
                    continue
                cand = (d.deadline, d.seq, trig, user, d)
                if best is None or cand[:2] < best[:2]:
                    best = cand
        if best is None:
            return None
        due = best[0]
        if due < limit or (inclusive and due == limit):
            return best
        return None

    def fire_timers(self, limit: int, inclusive: bool) -> None:
        while (timer := self.next_timer(limit, inclusive)) is not None:
            due, _, trig, user, obj = timer
            if isinstance(obj, Window):
                self.windows[(trig.name, user)].remove(obj)
                self.fire(trig, user, obj.key, due, obj.events)
            else:
                del self.inactivity[(trig.name, user)]
                self.fire(trig, user, None, due, [obj.event])

    # ------------------------------------------------------------- events

    def resolve_id(self, uid: str) -> str:
        while uid in self.links:
            uid = self.links[uid]
        return uid

    def link(self, other: str, user: str) -> str | None:
        """Link `other` to `user`; return `other` when its state must be merged."""
        if other == user:
            return None  # never linked to itself
        cur: str | None = user
        while cur is not None:  # a link that would close a loop is ignored
            if cur == other:
                return None
            cur = self.links.get(cur)
        if other in self.links:
            self.links[other] = user  # re-pointed; it holds no state of its own
            return None
        self.links[other] = user
        return other

    def merge(self, anon: str, user: str) -> None:
        """Move everything gathered under `anon` into `user` (the merge table), but for
        the count lists (merge_counts)."""
        self.traits[user] = {**self.traits.pop(anon, {}), **self.traits.get(user, {})}
        self.history[user] = sorted(
            self.history.pop(anon, []) + self.history.get(user, []),
            key=lambda h: self.order[h[1]["messageId"]],
        )
        for trig in self.triggers:
            a, u = (trig.name, anon), (trig.name, user)
            if a in self.last_fire:
                self.last_fire[u] = max(self.last_fire.pop(a), self.last_fire.get(u, -(10**18)))
            if a in self.inactivity:
                da = self.inactivity.pop(a)
                du = self.inactivity.get(u)
                if du is None or (da.deadline, da.seq) > (du.deadline, du.seq):
                    self.inactivity[u] = da
            for wa in self.windows.pop(a, []):
                windows = self.windows.setdefault(u, [])
                wu = next((w for w in windows if json_eq(w.key, wa.key)), None)
                if wu is None:
                    windows.append(wa)
                elif trig.spec.get("restart", False):
                    later = max(wa, wu, key=lambda w: (w.deadline, w.seq))
                    wu.deadline, wu.seq = later.deadline, later.seq
                    wu.events = sorted(wa.events + wu.events, key=lambda m: self.order[m])
                    wu.key = min(wa, wu, key=lambda w: self.order[w.events[0]]).key
                elif self.order[wa.events[0]] < self.order[wu.events[0]]:
                    windows[windows.index(wu)] = wa  # the window that opened first

    def merge_counts(self, anon: str, user: str, t: int) -> None:
        """Count lists are merged last, once the whole context (with the linking event's
        traits) is merged: the merged list may fire at the linking event's time `t`."""
        for trig in self.triggers:
            a, u = (trig.name, anon), (trig.name, user)
            lists = self.counts.setdefault(u, [])
            for la in self.counts.pop(a, []):
                lu = next((e for e in lists if json_eq(e[0][2], la[0][2])), None)
                if lu is None:
                    lists.append(la)
                    continue
                lu[:] = sorted(la + lu, key=lambda e: self.order[e[1]])
                if trig.within is not None:
                    lu[:] = [e for e in lu if e[0] > t - trig.within]
                if len(lu) >= trig.count:
                    lists.remove(lu)
                    self.fire(trig, user, lu[0][2], t, [e[1] for e in lu])
            lists[:] = [e for e in lists if e]

    def apply(self, t: int, idx: int, event: dict[str, Any]) -> None:
        mid = event["messageId"]
        self.order[mid] = (t, idx)
        link = link_of(event)
        merged = None if link is None else self.link(*link)
        user = self.resolve_id(own_id(event))
        if merged is not None:
            self.merge(merged, user)
        # Context first: traits (identify, one level deep) and activity history.
        if event_type(event) == "identify" and isinstance(event.get("traits"), dict):
            self.traits.setdefault(user, {}).update(event["traits"])
        if is_activity(event):
            self.history.setdefault(user, []).append((t, event))
        if merged is not None:
            self.merge_counts(merged, user, t)
        for trig in self.triggers:
            if trig.shape == "count":
                self.apply_count(trig, user, t, mid, event)
            elif trig.shape == "absence":
                self.apply_absence(trig, user, t, mid, event)
            else:
                self.apply_inactivity(trig, user, t, mid, event)

    def key_value(self, trig: Trigger, event: dict[str, Any]) -> Any:
        if trig.key is None:
            return None
        v = resolve(event, trig.key)
        return None if v is MISSING else v

    def apply_count(self, trig: Trigger, user: str, t: int, mid: str, event: dict) -> None:
        if not matcher_holds(trig.spec["when"], event):
            return
        kv = self.key_value(trig, event)
        lists = self.counts.setdefault((trig.name, user), [])
        entries = next((e for e in lists if json_eq(e[0][2], kv)), None)
        if entries is None:
            entries = []
            lists.append(entries)
        entries.append((t, mid, kv))
        if trig.within is not None:
            entries[:] = [e for e in entries if e[0] > t - trig.within]
        if len(entries) >= trig.count:
            key = entries[0][2]
            ids = [e[1] for e in entries]
            lists.remove(entries)
            self.fire(trig, user, key, t, ids)

    def apply_absence(self, trig: Trigger, user: str, t: int, mid: str, event: dict) -> None:
        assert trig.within is not None
        windows = self.windows.setdefault((trig.name, user), [])
        if matcher_holds(trig.spec["unless"], event):
            kv = self.key_value(trig, event)
            if trig.key is None or kv is None:
                windows.clear()
            else:
                windows[:] = [w for w in windows if not json_eq(w.key, kv)]
        if matcher_holds(trig.spec["when"], event):
            kv = self.key_value(trig, event)
            open_w = next((w for w in windows if json_eq(w.key, kv)), None)
            if open_w is None:
                windows.append(Window(kv, t + trig.within, self.next_seq(), [mid]))
            elif trig.spec.get("restart", False):
                open_w.deadline = t + trig.within
                open_w.seq = self.next_seq()
                open_w.events.append(mid)

    def apply_inactivity(self, trig: Trigger, user: str, t: int, mid: str, event: dict) -> None:
        if not is_activity(event):
            return
        if "of" in trig.spec and not activity_matcher_holds(trig.spec["of"], event):
            return
        self.inactivity[(trig.name, user)] = Deadline(t + trig.inactive, self.next_seq(), mid)


EVENT_TYPES = ("track", "page", "screen", "identify", "alias", "group")
ID_FIELDS = ("userId", "anonymousId", "previousId", "messageId")


def is_bad(event: Any) -> bool:
    """An event that cannot be used (docs/semantics.md "Events"): not an object, an
    unknown type, an id that is not a non-empty string, no user, no usable time."""
    if not isinstance(event, dict):
        return True
    if event_type(event) not in EVENT_TYPES:
        return True
    for f in ID_FIELDS:
        if f in event and not (isinstance(event[f], str) and event[f]):
            return True
    if "userId" not in event and "anonymousId" not in event:
        return True
    try:
        event_time(event)
    except (KeyError, TypeError, ValueError):
        return True
    return False


@dataclass
class Acceptance:
    accepted: list[tuple[int, int, dict[str, Any]]]  # (time, arrival index, event)
    late: int = 0
    duplicate: int = 0
    bad: int = 0


def accept(events: list[dict[str, Any]], lateness: int) -> Acceptance:
    """Decide acceptance in arrival order; the accepted events stay in arrival order."""
    seen: set[str] = set()
    max_time: int | None = None
    out = Acceptance([])
    for i, event in enumerate(events):
        if is_bad(event):
            out.bad += 1
            continue
        mid = event["messageId"]
        if mid in seen:
            out.duplicate += 1
            continue
        t = event_time(event)
        if max_time is not None and t < max_time - lateness:
            out.late += 1
            continue
        seen.add(mid)
        max_time = t if max_time is None else max(max_time, t)
        out.accepted.append((t, i, event))
    return out


def reference_fires(
    rules: dict[str, Any] | str, events: list[dict[str, Any]], until: str | None = None
) -> list[dict[str, Any]]:
    """Fires (without fire_id) for `rules` (a mapping or YAML text) and `events` in
    arrival order, as SPEC §1-§4 define them."""
    if isinstance(rules, str):
        rules = yaml.safe_load(rules)
    lateness, triggers = load_triggers(rules)
    accepted = accept(events, lateness).accepted
    model = Model(triggers)
    for t, idx, event in sorted(accepted, key=lambda a: (a[0], a[1])):
        model.fire_timers(t, inclusive=False)
        model.apply(t, idx, event)
    ends = [t for t, _, _ in accepted]
    if until is not None:
        ends.append(time_ms(until))
    if ends:
        model.fire_timers(max(ends), inclusive=True)
    return model.fires
