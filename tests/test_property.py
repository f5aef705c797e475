"""Property test: the engine's replay gives exactly the fires of the reference model.

tests/reference.py is an independent brute-force reading of SPEC §1-§4. Hypothesis
generates small rules files (every shape, keys, cooldowns, guards, `where` operators)
and short event streams over a few users on a coarse time grid, so that events tie on a
millisecond, land exactly on deadlines, arrive out of order (within and beyond the
allowed lateness) and repeat messageIds. The engine's fires and the reference's must be
equal as multisets (ignoring fire_id), the replay's accepted/late/duplicate/bad counts
must match, and fire_id must be a function of the fields it is derived from.

Tests: the main property (all shapes, with or without an `until` that lets every open
window fall due), `until` before, at and after the stream, keyed windows falling due in
the same millisecond (timer order and cooldown), identity linking and merging, and the
minimal merge cases that property found.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from reference import (
    accept,
    duration_ms,
    event_time,
    format_ms,
    is_bad,
    reference_fires,
    time_ms,
)

BASE_MS = time_ms("2026-03-01T00:00:00.000Z")
NAMES = ["add", "buy", "song", "view"]
USERS = ["u1", "u2", "a1"]  # a1 is anonymous: it has only an anonymousId
ADDRS = [{"city": "X"}, {"zip": "1"}, {"city": "Y", "zip": "1"}]
PATHS = ["/", "/cart", "/x/1"]
PAGE_NAMES = ["Home", "Pricing"]

FIRE_KEYS = {"trigger", "user_id", "key", "fire_time", "fire_id", "events", "suppressed"}

# ------------------------------------------------------------------ value pools

QTY = [0, 1, 2, 3, 1.0, 2.5, True, False, "1", "2", None]
KEYS = [1, 1.0, 2, True, "1", "a", None]
STRS = ["abc", "xbc", "ab", "", "a1", "B"]
TAGS = [[], ["a"], ["a", "b"], ["b", 1], [1.0, True]]
PLANS = ["pro", "free", "Pro", 1, None]
SCORES = [0, 1, 2.5, 3, "3", True]

WITHIN = ["250ms", "500ms", "1s", "1500ms", "2s", "3s", "5s"]
INACTIVE = ["500ms", "1s", "2s", "3s"]
COOLDOWN = ["1ms", "500ms", "1s", "3s", "10s"]
LATENESS = ["0ms", "250ms", "1s", "2s", "5s", "10s"]

# ---------------------------------------------------------------- rules grammar


_PICKERS: dict[str, st.SearchStrategy[Any]] = {}


def pick(draw: st.DrawFn, options: list[Any]) -> Any:
    """draw(sampled_from(options)), building each strategy once (building strategies
    inside draws is what makes generation slow)."""
    key = repr(options)
    if key not in _PICKERS:
        _PICKERS[key] = st.sampled_from(options)
    return draw(_PICKERS[key])


def chance(draw: st.DrawFn, one_in: int) -> bool:
    return pick(draw, list(range(one_in))) == 0


PATH_OPS: dict[str, tuple[list[str], list[Any]]] = {
    "properties.qty": (
        ["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists"],
        [*QTY, [1, "2"], [True, 2.5]],
    ),
    "properties.s": (
        ["eq", "ne", "gt", "lt", "contains", "starts_with", "ends_with", "matches", "in", "exists"],
        [*STRS, "a", "b", "c", 1, "^a", "b.$", "[0-9]", "^$"],
    ),
    "properties.tags": (["contains", "exists", "eq"], ["a", "b", 1, True, ["a"]]),
    "properties.tags.0": (["eq", "ne", "exists", "in"], ["a", "b", 1, True]),
    "properties.k": (["eq", "ne", "in", "not_in", "exists", "gte"], KEYS),
    "event": (["eq", "ne", "in", "starts_with"], [*NAMES, [NAMES[0], NAMES[2]], "s"]),
    "name": (["eq", "exists"], PAGE_NAMES),
    "traits.plan": (["eq", "ne", "in", "exists"], PLANS),
    "context.page.path": (["eq", "starts_with", "matches", "exists", "ne"], [*PATHS, "^/x", "t$"]),
}
TRAIT_OPS: dict[str, tuple[list[str], list[Any]]] = {
    "plan": (["eq", "ne", "in", "not_in", "exists", "starts_with"], PLANS),
    "score": (["eq", "ne", "gt", "gte", "lt", "lte", "exists"], SCORES),
    "vip": (["eq", "ne", "exists"], [True, False, 1]),
    "addr.city": (["eq", "ne", "exists"], ["X", "Y"]),
    "addr": (["exists", "eq"], [{"city": "X"}]),
}
STRING_OPS = ("starts_with", "ends_with", "contains", "matches")


def condition(draw: st.DrawFn, paths: dict[str, tuple[list[str], list[Any]]]) -> tuple[str, Any]:
    path = pick(draw, sorted(paths))
    ops, pool = paths[path]
    op = pick(draw, ops)
    if op == "exists":
        arg: Any = pick(draw, [True, False])
    elif op in STRING_OPS and path != "properties.tags":
        arg = pick(draw, [a for a in pool if isinstance(a, str)])
    elif op in ("gt", "gte", "lt", "lte"):  # the engine rejects other operands
        arg = pick(draw, [a for a in pool if isinstance(a, int | float | str) and a is not True and a is not False])
    else:
        arg = pick(draw, pool)
    literal = op == "eq" and not isinstance(arg, list | dict) and chance(draw, 2)
    return path, (arg if literal else {op: arg})


def where_clause(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(pick(draw, [1, 2])):
        kind = pick(draw, ["cond", "cond", "cond", "any", "all", "not"])
        if kind == "cond" or depth == 0:
            path, spec = condition(draw, PATH_OPS)
            if path in out and isinstance(out[path], dict) and isinstance(spec, dict):
                out[path] = {**out[path], **spec}
            else:
                out[path] = spec
        elif kind == "not":
            out["not"] = where_clause(draw, depth - 1)
        else:
            out[kind] = [where_clause(draw, depth - 1) for _ in range(pick(draw, [1, 2]))]
    return out


def name_list(draw: st.DrawFn) -> list[str]:
    first = pick(draw, NAMES)
    if chance(draw, 2):
        return [first]
    return [first, pick(draw, [n for n in NAMES if n != first])]


def matcher(draw: st.DrawFn, activity: bool = False) -> Any:
    """A name, a list of names, or {event, type, where}; with `activity`, one for
    `of`/`did`/`did_not`, where the engine rejects a non-activity `type`."""
    kinds = ["name", "name", "name", "list", "dict", "page", "screen"]
    kind = pick(draw, kinds if activity else [*kinds, "identify"])
    if kind == "name":
        return pick(draw, NAMES)
    if kind == "list":
        return name_list(draw)
    if kind in ("page", "screen"):
        m: dict[str, Any] = {"type": kind}
        if chance(draw, 2):
            m["where"] = {"name": pick(draw, PAGE_NAMES)}
        return m
    if kind == "identify":
        m = {"type": pick(draw, ["identify", "group", ["identify", "group"]])}
        if chance(draw, 2):
            m["where"] = {"traits.plan": pick(draw, PLANS)}
        return m
    m = {}
    if chance(draw, 2):
        m["event"] = pick(draw, NAMES) if chance(draw, 2) else name_list(draw)
    if chance(draw, 5):
        m["type"] = pick(draw, ["track", ["track", "page"], "page", "screen"])
    if not m or chance(draw, 2):
        m["where"] = where_clause(draw)
    return m


def guard(draw: st.DrawFn) -> dict[str, Any]:
    kind = pick(draw, ["trait", "did", "did_not"])
    if kind == "trait":
        path, spec = condition(draw, TRAIT_OPS)
        if not isinstance(spec, dict):
            spec = {"eq": spec}
        return {"trait": path, **spec}
    g: dict[str, Any] = {kind: matcher(draw, activity=True), "within": pick(draw, WITHIN)}
    if kind == "did" and chance(draw, 2):
        g["min_count"] = pick(draw, [1, 2, 3])
    return g


def trigger(draw: st.DrawFn) -> dict[str, Any]:
    shape = pick(draw, ["count", "absence", "inactivity"])
    t: dict[str, Any] = {}
    if shape == "count":
        t["when"] = matcher(draw)
        if chance(draw, 2):
            t["count"] = pick(draw, [1, 2, 3])
        if chance(draw, 2):
            t["within"] = pick(draw, WITHIN)
    elif shape == "absence":
        t["when"] = matcher(draw)
        t["unless"] = matcher(draw)
        t["within"] = pick(draw, WITHIN)
        if chance(draw, 2):
            t["restart"] = pick(draw, [True, False])
    else:
        t["inactive"] = pick(draw, INACTIVE)
        if chance(draw, 2):
            t["of"] = matcher(draw, activity=True)
    if shape != "inactivity" and chance(draw, 2):
        t["key"] = pick(draw, ["properties.k", "properties.k", "properties.qty"])
    if chance(draw, 3):
        t["cooldown"] = pick(draw, COOLDOWN)
    if chance(draw, 3):
        t["if"] = [guard(draw) for _ in range(pick(draw, [1, 2]))]
    return t


@st.composite
def rules_files(draw: st.DrawFn) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    if not chance(draw, 4):
        rules["settings"] = {"allowed_lateness": pick(draw, LATENESS)}
        if chance(draw, 4):
            # A live server forgets messageIds after dedup_window; a replay remembers all.
            rules["settings"]["dedup_window"] = pick(draw, ["1ms", "1s"])
    n = pick(draw, [1, 2, 3, 4])
    rules["triggers"] = {f"t{i}": trigger(draw) for i in range(n)}
    return rules


@st.composite
def keyed_windows_files(draw: st.DrawFn) -> dict[str, Any]:
    """Keyed absence windows with a cooldown on a coarse grid: many windows of one
    trigger and user fall due in the same millisecond, where the order they were set
    decides which one fires and which ones the cooldown suppresses."""
    triggers = {}
    for i in range(pick(draw, [1, 2])):
        t: dict[str, Any] = {
            "when": pick(draw, ["add", ["add", "song"]]),
            "unless": pick(draw, ["buy", "song", {"event": "buy", "where": {"properties.k": "a"}}]),
            "within": pick(draw, ["1s", "2s", "500ms"]),
            "restart": pick(draw, [True, False]),
            "key": "properties.k",
            "cooldown": pick(draw, ["1ms", "1s", "10s"]),
        }
        if chance(draw, 3):
            t["if"] = [guard(draw)]
        triggers[f"w{i}"] = t
    return {"settings": {"allowed_lateness": pick(draw, ["5s", "1s"])}, "triggers": triggers}


# ---------------------------------------------------------------- event streams

# 0 first: the shrinker moves steps towards it, and then dropping an event moves no
# other event in time.
STEPS = [0, 250, 500, 250, 0, 1000, -250, -1000, -3000, 2000, -6000, 1]

# Strategies are built once: building them inside the draw loop is what makes
# generation slow.
STEP = st.sampled_from(STEPS)
STYLE = st.sampled_from(["z", "z", "z", "z", "z", "naive", "offset", "micro"])
WHO = st.integers(0, 3)
ANON = st.sampled_from(["a1", "a2"])
TARGET = st.sampled_from(["u1", "u2"])
EARLIER = st.integers(0, 40)
MICRO = st.sampled_from(["000", "999", "5"])
ONE_IN_TEN = st.integers(0, 9)
KIND = st.sampled_from(["track"] * 6 + ["identify", "page", "screen", "group"])
SKEW = st.sampled_from([0, -3_600_000, 2_000, -1_500])
LAG = st.sampled_from([0, 300, 20_000])
CONTEXT = st.sampled_from([None, *({"page": {"path": p}} for p in PATHS), {"page": {}}, {"page": {"path": 1}}])
NAME = st.sampled_from(NAMES)
PAGE_NAME = st.sampled_from(PAGE_NAMES)
TYPED = st.integers(0, 4)
BAD = st.integers(0, 24)
SPOIL = st.sampled_from(["no ids", "number id", "empty id", "type", "no time", "bad time"])
LINK_KIND = st.sampled_from(["none"] * 5 + ["identify", "identify", "alias", "alias_anon", "self"])


def _all_dicts(pools: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every mapping with each key absent or one of its pool's values, the empty one
    first (one draw from this list is much cheaper than a draw per key)."""
    absent = object()
    names = list(pools)
    out = []
    for combo in itertools.product(*([absent, *pools[n]] for n in names)):
        out.append({n: v for n, v in zip(names, combo, strict=True) if v is not absent})
    return out


TRAITS = st.sampled_from(_all_dicts({"plan": PLANS, "score": SCORES, "vip": [True, False], "addr": ADDRS}))
PROPERTIES = st.sampled_from(_all_dicts({"qty": QTY, "k": KEYS, "s": STRS, "tags": TAGS}))


@st.composite
def event_spec(
    draw: st.DrawFn,
    step: st.SearchStrategy[int],
    properties: st.SearchStrategy[dict[str, Any]],
    links: bool,
) -> dict[str, Any]:
    """The choices for one event, drawn together so that the shrinker can drop an event
    as a whole; `streams` turns them into events (times, ids, duplicates)."""
    spec: dict[str, Any] = {"step": draw(step), "who": draw(WHO)}
    link_kind = draw(LINK_KIND) if links else "none"
    if link_kind != "none":
        spec["link"] = (link_kind, draw(ANON), draw(TARGET))
        if link_kind == "identify":
            spec["traits"] = draw(TRAITS)
        spec["style"] = draw(STYLE), draw(MICRO)
        return spec
    if draw(ONE_IN_TEN) == 0:
        # A repeated messageId: a retry of an earlier event or a different one.
        spec["repeat"] = draw(EARLIER), draw(st.booleans())
        if spec["repeat"][1]:
            return spec
    kind = spec["kind"] = draw(KIND)
    if kind in ("identify", "group"):
        spec["traits"] = draw(TRAITS)
    else:
        if kind in ("page", "screen"):
            spec["name"] = draw(PAGE_NAME)
        else:
            spec["typed"] = draw(TYPED) > 0
            spec["name"] = draw(NAME)
            spec["both_ids"] = draw(ONE_IN_TEN) == 0
        spec["properties"] = draw(properties)
        spec["context"] = draw(CONTEXT)
    if draw(ONE_IN_TEN) == 0:
        spec["skew"] = draw(SKEW), draw(LAG), draw(st.integers(0, 2))
    spec["style"] = draw(STYLE), draw(MICRO)
    spec["style2"] = draw(STYLE), draw(MICRO)
    if draw(BAD) == 0:
        spec["spoil"] = draw(SPOIL)
    return spec


def timestamp_text(style: tuple[str, str], ms: int) -> str:
    """`ms` in one of the ISO-8601 spellings the engine must read alike."""
    z = format_ms(ms)
    if style[0] == "naive":
        return z[:-1]
    if style[0] == "micro":
        return z[:-1] + style[1] + "Z"
    if style[0] == "offset":
        return format_ms(ms + 3_600_000)[:-1] + "+01:00"
    return z


@st.composite
def streams(
    draw: st.DrawFn,
    max_size: int = 40,
    step: st.SearchStrategy[int] = STEP,
    properties: st.SearchStrategy[dict[str, Any]] = PROPERTIES,
    users: list[str] = USERS,
    links: bool = False,
) -> list[dict[str, Any]]:
    """Events in arrival order. Ids starting with `a` are anonymous. With `links`, some
    identify and alias events link an anonymous id to a user (possibly re-pointing it)."""
    n_users = draw(st.integers(1, len(users)))
    # A plain st.lists averages 5 elements; a drawn minimum makes longer streams common.
    min_size = draw(st.sampled_from([0, max_size // 4, max_size // 2]))
    specs = draw(st.lists(event_spec(step, properties, links), min_size=min_size, max_size=max_size))
    events: list[dict[str, Any]] = []
    t = 0
    for i, spec in enumerate(specs):
        t = max(0, t + spec["step"])
        user = users[spec["who"] % n_users]
        if "link" in spec:
            link_kind, anon, target = spec["link"]
            ev: dict[str, Any] = {"messageId": f"m{i}", "timestamp": timestamp_text(spec["style"], BASE_MS + t)}
            if link_kind == "identify":
                ev.update(type="identify", userId=target, anonymousId=anon, traits=spec["traits"])
            elif link_kind == "alias":
                ev.update(type="alias", userId=target, previousId=anon)
            elif link_kind == "alias_anon":
                ev.update(type="alias", userId=target, anonymousId=anon)
            else:  # an id is never linked to itself
                ev.update(type="identify", userId=target, anonymousId=target)
            events.append(ev)
            continue
        mid = f"m{i}"
        if "repeat" in spec and events:
            earlier = events[spec["repeat"][0] % len(events)]
            if spec["repeat"][1]:
                events.append(copy.deepcopy(earlier))
                continue
            mid = earlier["messageId"]
        elif "repeat" in spec:
            continue
        kind = spec["kind"]
        ev = {"anonymousId": user} if user.startswith("a") else {"userId": user}
        ev["messageId"] = mid
        if kind in ("identify", "group"):
            # A group's traits are the group's: they do not merge into the user's.
            ev["type"] = kind
            ev["traits"] = spec["traits"]
            if kind == "group":
                ev["groupId"] = "g1"
        else:
            if kind in ("page", "screen"):
                ev["type"] = kind
                ev["name"] = spec["name"]
            else:
                if spec["typed"]:
                    ev["type"] = "track"
                ev["event"] = spec["name"]
                if "userId" in ev and spec["both_ids"]:
                    # Both ids on a track event: the user is userId, and no link is made.
                    ev["anonymousId"] = "a1"
            ev["properties"] = spec["properties"]
            if spec["context"] is not None:
                ev["context"] = spec["context"]
        if "skew" in spec:
            # Clock-skew correction: timestamp := receivedAt - (sentAt - originalTimestamp).
            skew, lag, form = spec["skew"]
            original = BASE_MS + t + skew
            ev["sentAt"] = timestamp_text(spec["style"], original + lag)
            ev["receivedAt"] = timestamp_text(spec["style2"], BASE_MS + t + lag)
            if form == 0:
                ev["timestamp"] = timestamp_text(spec["style"], original)
            else:
                ev["originalTimestamp"] = timestamp_text(spec["style2"], original)
                if form == 1:
                    ev["timestamp"] = ev["receivedAt"]
        else:
            ev["timestamp"] = timestamp_text(spec["style"], BASE_MS + t)
        if "spoil" in spec:
            spoil_event(ev, spec["spoil"], i)
        events.append(ev)
    return events


def spoil_event(ev: dict[str, Any], spoil: str, i: int) -> None:
    """Make `ev` a bad event (docs/semantics.md "Events")."""
    ev["messageId"] = f"bad{i}"  # never accepted, so its id stays free
    if spoil == "no ids":
        ev.pop("userId", None)
        ev.pop("anonymousId", None)
    elif spoil == "number id":
        ev["userId"] = 7
    elif spoil == "empty id":
        ev["messageId"] = ""
    elif spoil == "type":
        ev["type"] = "click"
    elif spoil == "no time":
        for f in ("timestamp", "sentAt", "receivedAt", "originalTimestamp"):
            ev.pop(f, None)
    else:
        ev["timestamp"] = "yesterday"
        ev.pop("sentAt", None)


# ------------------------------------------------------------------- comparison


def canonical_key(v: Any) -> Any:
    """1 and 1.0 are the same key; true stays distinct from 1."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def fire_sort_key(f: dict[str, Any]) -> tuple[Any, ...]:
    return (
        f["fire_time"],
        f["trigger"],
        f["user_id"],
        json.dumps(canonical_key(f["key"])),
        tuple(f["events"]),
        f["suppressed"] or "",
    )


def normalized(fires: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(fire_sort_key(f) for f in fires)


def run_engine(rules_text: str, events: list[dict[str, Any]], until: str | None = None) -> Any:
    from tripwire.replay import replay_events
    from tripwire.rules import parse_rules

    rules = parse_rules(rules_text, "<property>")
    return replay_events(rules, copy.deepcopy(events), until=until)


def check(rules: dict[str, Any], events: list[dict[str, Any]], until: str | None = None) -> None:
    text = yaml.safe_dump(rules, sort_keys=False)
    report = note if currently_in_test_context() else print  # the fixed cases run outside hypothesis
    report("rules:\n" + text)
    report("events:\n" + "\n".join(json.dumps(e) for e in events))
    if until is not None:
        report(f"until: {until}")
    expected = reference_fires(copy.deepcopy(rules), copy.deepcopy(events), until=until)
    result = run_engine(text, events, until)
    got = [dict(f) for f in result.fires]
    for f in got:
        assert set(f) == FIRE_KEYS, f
        assert f["suppressed"] in (None, "cooldown", "guard"), f
    got_n, exp_n = normalized(got), normalized(expected)
    if got_n != exp_n:
        g, e = Counter(got_n), Counter(exp_n)
        extra = sorted((g - e).elements())
        missing = sorted((e - g).elements())
        raise AssertionError(f"engine and reference disagree\n  engine only   : {extra}\n  reference only: {missing}")
    # Acceptance is counted (SPEC §2: a late event "is counted and logged").
    lateness = duration_ms((rules.get("settings") or {}).get("allowed_lateness", "5s"))
    decided = accept(copy.deepcopy(events), lateness)
    stats = result.stats
    assert (stats.accepted, stats.late, stats.duplicate, stats.bad) == (
        len(decided.accepted),
        decided.late,
        decided.duplicate,
        decided.bad,
    ), ("accepted, late, duplicate, bad", stats)
    # fire_id: a function of (trigger, user_id, key, fire_time, events), stable across runs.
    again = [dict(f) for f in run_engine(text, events, until).fires]
    ids: dict[tuple[Any, ...], str] = {}
    for f in got + again:
        fields = fire_sort_key(f)[:5]
        assert isinstance(f["fire_id"], str) and f["fire_id"], f
        assert ids.setdefault(fields, f["fire_id"]) == f["fire_id"], (fields, f)
    assert len(set(ids.values())) == len(ids), "two different fires share a fire_id"


def good_times(events: list[dict[str, Any]]) -> list[int]:
    return [event_time(e) for e in events if not is_bad(e)]


def flush_until(events: list[dict[str, Any]]) -> str:
    return format_ms(max(good_times(events), default=BASE_MS) + 60_000)


PROFILE = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(PROFILE, max_examples=1800)
@given(rules=rules_files(), events=streams(), flush=st.booleans())
def test_replay_matches_reference(rules: dict[str, Any], events: list[dict[str, Any]], flush: bool) -> None:
    """With `flush`, an `until` long after the stream lets every open window fall due."""
    check(rules, events, until=flush_until(events) if flush else None)


@settings(PROFILE, max_examples=500)
@given(
    rules=rules_files(),
    events=streams(max_size=15),
    until_offset=st.one_of(st.none(), st.sampled_from([0, 1, 250, 999, 1000, 3000, 20_000])),
    until_before=st.booleans(),
)
def test_until_matches_reference(
    rules: dict[str, Any],
    events: list[dict[str, Any]],
    until_offset: int | None,
    until_before: bool,
) -> None:
    """`until` extends the end of the replay; an `until` before the last event changes
    nothing."""
    if until_offset is None:
        until = format_ms(BASE_MS - 1000)  # before every event
    else:
        times = good_times(events) or [BASE_MS]
        anchor = min(times) if until_before else max(times)
        until = format_ms(anchor + until_offset)
    check(rules, events, until=until)


@settings(PROFILE, max_examples=500)
@given(
    rules=keyed_windows_files(),
    events=streams(
        max_size=25,
        step=st.sampled_from([0, 250, 500, 0, 1000, -500]),
        properties=st.sampled_from([{}, {"k": "a"}, {"k": "b"}, {"k": "a"}, {"k": "b"}, {"k": None}]),
    ),
)
def test_same_millisecond_timers_match_reference(rules: dict[str, Any], events: list[dict[str, Any]]) -> None:
    check(rules, events, until=flush_until(events))


@settings(PROFILE, max_examples=800)
@given(
    rules=rules_files(),
    events=streams(users=["a1", "u1", "a2", "u2"], links=True),
    flush=st.booleans(),
)
def test_identity_merge_matches_reference(rules: dict[str, Any], events: list[dict[str, Any]], flush: bool) -> None:
    """Anonymous ids linked to users (identify, alias, re-pointing) mid-stream."""
    check(rules, events, until=flush_until(events) if flush else None)


def _track(mid: str, ms: int, **who: str) -> dict[str, Any]:
    return {"type": "track", "event": "add", "messageId": mid, "timestamp": format_ms(BASE_MS + ms), **who}


def _link(mid: str, ms: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": "u1",
        "anonymousId": "a1",
        "messageId": mid,
        "timestamp": format_ms(BASE_MS + ms),
    }


# Merges where the two ids' events share a millisecond: the reference order (timestamp,
# then arrival) decides, as if the two histories had been one user's.
MERGE_TIES = {
    "count lists join in reference order": (
        {"c": {"when": "add", "count": 2}},
        [_track("m1", 1000, anonymousId="a1"), _track("m2", 1000, userId="u1"), _link("m3", 3000)],
    ),
    "inactivity keeps the last activity in reference order": (
        {"i": {"inactive": "1s", "of": "add"}},
        [_track("m1", 1000, userId="u1"), _track("m2", 1000, anonymousId="a1"), _link("m3", 1500)],
    ),
    "without restart the window opened first in reference order wins": (
        {"w": {"when": "add", "unless": "buy", "within": "1s"}},
        [_track("m1", 1000, anonymousId="a1"), _track("m2", 1000, userId="u1"), _link("m3", 1500)],
    ),
    "with restart the when events of both windows join in reference order": (
        {"w": {"when": "add", "unless": "buy", "within": "1s", "restart": True}},
        [
            _track("m1", 500, userId="u1"),
            _track("m2", 600, anonymousId="a1"),
            _track("m4", 700, userId="u1"),
            _link("m3", 1200),
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(MERGE_TIES))
def test_identity_merge_ties(case: str) -> None:
    """Minimal cases the identity property test found (it finds them only sometimes)."""
    triggers, events = MERGE_TIES[case]
    check({"triggers": triggers}, events, until=flush_until(events))
