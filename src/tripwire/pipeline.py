"""The decision pipeline: rebuild an engine from the store, step it over arriving events,
write what a step changed in one transaction, and keep a poison event from blocking the rest.

A driver (the live server's writer thread) owns the clock and the queue; it hands the
pipeline the events in arrival order, the time and the watermark to advance to. One step
writes log rows with their acceptance and the watermark they were decided at, user states,
identity links, engine meta, fires and their deliveries, together, so a crash loses
nothing acknowledged and repeats no fire.

When a step fails, `isolate` finds the events that cannot be applied or saved (each alone
on a scratch engine first, then by bisecting the step when that was not enough), keeps them
in the quarantine with their reason, and commits the rest. A failure no event explains (the
disk, the database) is raised again: the driver stops taking events until the store works.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import structlog

from tripwire.actions.policies import in_holdout
from tripwire.engine import ACCEPTED, Engine, Fire
from tripwire.engine.core import NEVER
from tripwire.errors import FencedError, StoreUnavailableError
from tripwire.events import Event, parse_event
from tripwire.rules import Rules
from tripwire.store import Batch, FireRow, LogRow, NewDelivery, QuarantineRow, Store

log = structlog.get_logger("tripwire.pipeline")
# Failures that are no event's fault: the driver lost the partition, or the store is away
# (a restart). Fault isolation lets them through instead of blaming, or quarantining, events.
NOT_THE_EVENTS: Final = (FencedError, StoreUnavailableError)
_encode = msgspec.json.encode
_decode = msgspec.json.decode

QUARANTINED: Final = "quarantined"
# The log's mark of a user's timers set aside because their fire could not be written.
TIMERS_QUARANTINED: Final = "timers_quarantined"
NOT_RETRYABLE: Final = "not_retryable"
_REASON_CHARS: Final = 500
# A suspect: ("new", batch, index) for an arriving event, ("waiting", messageId) for one the
# log already accepted that this step would apply, ("timers", user) for a user's due timers.
Suspect = tuple[Any, ...]


@dataclass
class StepResult:
    """What a committed step decided: each batch's decisions, its fires, what was quarantined."""

    decisions: list[list[str]]
    fires: list[Fire]
    quarantined: list[QuarantineRow] = field(default_factory=list)
    wrote: bool = True  # False when the step changed nothing, so nothing was written


class Pipeline:
    """Recover, step, write and isolate over one store, for the rules in force."""

    def __init__(self, store: Store, rules: Rules, *, follow_events: bool = False) -> None:
        self.store = store
        self.rules = rules
        # True while a worker catches up on history: the watermark follows event time alone.
        self.follow_events = follow_events

    # -- recovery ----------------------------------------------------------------------

    def recover(self) -> Engine:
        """An engine as of the last commit: users, links, dedup memory, accepted events waiting.

        A logged event that can no longer be parsed (a limit added since it was accepted) is
        quarantined rather than stopping the start; a saved state that cannot be loaded is
        logged and skipped.
        """
        rules = self.rules
        engine = Engine(rules, dedup_window=rules.settings.dedup_window, follow_events=self.follow_events)
        meta = self.store.load_meta()
        if meta is not None:
            engine.load_meta(meta)
        engine.links = self.store.load_links()
        for uid, data in self.store.iter_users():
            try:
                engine.load_user(uid, data)
            except Exception as exc:
                log.error("saved state cannot be loaded; the user starts afresh", user_id=uid, error=_reason(exc))
        for message_id, ts in self.store.accepted_ids_since(engine.watermark - rules.settings.dedup_window):
            engine.remember(message_id, ts)
        unusable: list[QuarantineRow] = []
        for row in self.store.accepted_after(engine.watermark):
            try:
                engine.force_accept(parse_event(_decode(row.body)))
            except Exception as exc:
                unusable.append(
                    QuarantineRow(0, row.message_id, row.user_id, row.anonymous_id, row.ts, row.received_at,
                                  row.received_at, f"cannot be read back from the log: {_reason(exc)}", row.body)
                )  # fmt: skip
        if unusable:
            with self.store.write() as batch:
                batch.quarantine(unusable, [row.message_id for row in unusable])
            for entry in unusable:
                log.warning("logged event quarantined", message_id=entry.message_id, reason=entry.reason)
        engine.accepted = 0
        engine.take_changes()  # all of it is in the store already
        return engine

    def reload(self, engine: Engine, rules: Rules) -> Engine:
        """`engine` under new rules; the next step saves what the change touched."""
        moved = engine.with_rules(rules)
        self.rules = rules
        return moved

    # -- one step ----------------------------------------------------------------------

    def step(
        self,
        engine: Engine,
        batches: Sequence[Sequence[Event]],
        *,
        now: int,
        watermark: int,
        exclude: dict[Suspect, str] | None = None,
        commit: bool = True,
        retried: Sequence[int | None] = (),
        also: Callable[[Batch], None] | None = None,
    ) -> StepResult:
        """Decide `batches` in arrival order, advance to `watermark`, write it all at once.

        Suspects in `exclude` (with their reasons) are quarantined instead of applied. With
        `commit` off the transaction is rolled back: a trial, which leaves `engine` spent.
        `retried` holds, for the events of the first batch in order, the quarantine entry each
        is sent through again from (None: a new event); such an event's messageId, remembered
        when it was quarantined, is forgotten so it is not a duplicate of itself, and the entry
        records its new decision in the same transaction. `also` writes what the
        driver keeps with the step (a worker: its position in the topic, after checking it
        still owns the partition), in the same transaction, whenever the step writes.
        """
        exclude = exclude or {}
        waiting = {s[1]: reason for s, reason in exclude.items() if s[0] == "waiting"}
        withdrawn = engine.withdraw(set(waiting)) if waiting else []
        quarantine = [_quarantine_row(event, now, waiting[event.message_id]) for event in withdrawn]
        rows: list[LogRow] = []
        aside = {s[1]: reason for s, reason in exclude.items() if s[0] == "timers"}
        for uid in aside:
            engine.set_timers_aside(uid, watermark - 1)  # what this step's advance would fire
        decisions: list[list[str]] = []
        for b, events in enumerate(batches):
            decided: list[str] = []
            for i, event in enumerate(events):
                if b == 0 and i < len(retried) and retried[i] is not None:
                    engine.forget(event.message_id)
                reason = exclude.get(("new", b, i)) if exclude else None
                if reason is not None:
                    decision = QUARANTINED
                    engine.remember(event.message_id, event.ts)  # sent again, it is a duplicate
                    quarantine.append(_quarantine_row(event, now, reason))
                    body = _body(event.raw)
                else:
                    decision = engine.offer(event)
                    body = _encode(event.raw)
                decided.append(decision)
                rows.append(
                    LogRow(0, event.message_id, event.user_id, event.anonymous_id, event.ts, now, decision, body,
                           engine.watermark)
                )  # fmt: skip
            decisions.append(decided)
        offered_at = engine.watermark
        fires = engine.advance(watermark)
        if engine.timers_set_aside:
            entries = _timers_entries(engine, aside, watermark - 1, now)
            quarantine += entries
            # A replay meets this row before its next advance and cancels the same timers.
            rows += [LogRow(0, e.message_id, e.user_id, None, e.ts, now, TIMERS_QUARANTINED, e.body, offered_at)
                     for e in entries]  # fmt: skip
        marks = [(e, d) for e, d in zip(retried, decisions[0], strict=True) if e is not None] if retried else []
        logged = [event.message_id for event in withdrawn]
        wrote = self._write(engine, rows, fires, quarantine, logged, now, commit, marks, also)
        return StepResult(decisions, fires, quarantine, wrote)

    def check_writable(self, engine: Engine) -> None:
        """Commit the engine's meta as it is: raises while the store cannot take a write."""
        self.save_progress(engine)

    def save_progress(self, engine: Engine, also: Callable[[Batch], None] | None = None) -> None:
        """Commit the engine's meta (its watermark) as it is, with the driver's `also` writes:
        for a step that moved the watermark, or read records, without changing anything else."""
        with self.store.write() as batch:
            if also is not None:
                also(batch)
            batch.save_meta(engine.dump_meta())

    def _write(
        self,
        engine: Engine,
        rows: list[LogRow],
        fires: list[Fire],
        quarantine: list[QuarantineRow],
        logged: list[str],
        now: int,
        commit: bool,
        marks: Sequence[tuple[int, str]] = (),
        also: Callable[[Batch], None] | None = None,
    ) -> bool:
        changed = rows or fires or quarantine or engine.dirty or engine.dirty_links or marks
        if not changed and commit:
            return False
        dirty, links = engine.take_changes()
        with self.store.write(commit=commit) as batch:
            if also is not None:
                also(batch)
            batch.append_events(rows)
            batch.save_users({uid: engine.dump_user(uid) for uid in dirty})
            if links:
                batch.save_links(links)
            batch.save_meta(engine.dump_meta())
            if quarantine:
                batch.quarantine(quarantine, logged)
            if fires:
                fire_rows, deliveries = outbox_rows(engine.rules, fires, now)
                batch.add_fires(fire_rows)
                batch.add_deliveries(deliveries)
            for entry, decision in marks:
                batch.mark_retried(entry, now, decision)
        return True

    # -- fault isolation -----------------------------------------------------------------

    def isolate(
        self,
        batches: Sequence[Sequence[Event]],
        *,
        now: int,
        watermark: int,
        error: BaseException,
        retried: Sequence[int | None] = (),
        also: Callable[[Batch], None] | None = None,
    ) -> tuple[Engine, StepResult]:
        """After `step` failed with `error`: quarantine the events at fault, commit the rest
        (with `retried` as `step` takes it).

        Returns the engine as of that commit. Raises when no event explains the failure.
        """
        engine = self.recover()
        # The store must take a write of nothing; if it cannot, no event is to blame.
        self._write(engine, [], [], [], [], now, commit=False)
        arriving: list[Suspect] = [("new", b, i) for b, events in enumerate(batches) for i in range(len(events))]
        waiting = {e.message_id: e for e in engine.pending_events() if e.ts <= watermark}
        suspects = arriving + [("waiting", mid) for mid in waiting]
        bad: dict[Suspect, str] = {}

        def probe(group: list[Suspect], base: Engine) -> None:
            for suspect in group:
                event = batches[suspect[1]][suspect[2]] if suspect[0] == "new" else waiting[suspect[1]]
                reason = self._probe(base, event, now)
                if reason is not None:
                    bad[suspect] = reason

        # The usual poison arrives in the failing round; events that waited come next, then
        # timers coming due, each probed alone; bisecting the round (costly) is the last resort.
        probe(arriving, engine)
        probes = [
            lambda: probe([("waiting", mid) for mid in waiting], self.recover()),
            self._probe_timers(batches, bad, now, watermark),
        ]
        while True:
            engine = self.recover()
            try:
                result = self.step(
                    engine, batches, now=now, watermark=watermark, exclude=bad, retried=retried, also=also
                )
            except NOT_THE_EVENTS:
                raise
            except Exception as exc:
                found = len(bad)
                while probes and len(bad) == found:
                    probes.pop(0)()  # a failed step spent `engine`: each probe starts from the store
                if len(bad) > found:
                    continue
                culprit = self._bisect(batches, [s for s in suspects if s not in bad], bad, now, watermark)
                if culprit is None:
                    raise exc from error
                bad[culprit[0]] = culprit[1]
                continue
            for row in result.quarantined:
                log.warning("quarantined", message_id=row.message_id, user_id=row.user_id, reason=row.reason)
            return engine, result

    def _probe_timers(
        self, batches: Sequence[Sequence[Event]], bad: dict[Suspect, str], now: int, watermark: int
    ) -> Callable[[], None]:
        """A probe of each user's timers coming due in this step, with the user's events of
        the step, alone on a scratch engine: the users whose timers' fires cannot be written."""

        def run() -> None:
            live = self.recover()
            events: dict[str, list[Event]] = {}
            # Only an event early enough for the shortest timer to come due in this step can
            # start one that does: the others need no probe (a probe is a trial write).
            spans = [t.within or 0 if t.shape == "absence" else t.inactive for t in self.rules.triggers]
            spans = [span for span in spans if span > 0]
            latest = watermark - 1 - min(spans) if spans else NEVER
            waiting = [e for e in live.pending_events() if e.ts <= watermark]
            for event in [*waiting, *(e for events in batches for e in events)]:
                if event.ts > latest:
                    continue
                for uid in {live.resolve(x) for x in _ids(event)}:
                    events.setdefault(uid, []).append(event)
            for uid in dict.fromkeys([*live.users_due(watermark - 1), *events]):
                try:
                    scratch = self._scratch(live, events.get(uid, ()), [uid])
                    for event in events.get(uid, ()):
                        scratch.force_accept(event)
                    fires = scratch.advance(watermark)
                    self._write(scratch, [], fires, [], [], now, commit=False)
                except NOT_THE_EVENTS:
                    raise
                except Exception as exc:
                    bad[("timers", uid)] = f"a timer's fire cannot be written: {_reason(exc)}"

        return run

    def _probe(self, live: Engine, event: Event, now: int) -> str | None:
        """Apply one event alone, on a scratch engine holding only its users' state; why it
        fails, if it does and the same users do not fail without it (a timer of theirs
        coming due by then is not the event's fault: the timers probe finds it)."""
        until = max(live.watermark, event.ts)
        try:
            scratch = self._scratch(live, [event])
            body = _encode(event.raw)
            scratch.force_accept(event)
            fires = scratch.advance(until)
            row = LogRow(0, event.message_id, event.user_id, event.anonymous_id, event.ts, now, ACCEPTED, body)
            self._write(scratch, [row], fires, [], [], now, commit=False)
        except NOT_THE_EVENTS:
            raise
        except Exception as exc:
            reason = _reason(exc)
        else:
            return None
        try:
            without = self._scratch(live, [event])
            self._write(without, [], without.advance(until), [], [], now, commit=False)
        except NOT_THE_EVENTS:
            raise
        except Exception:
            return None
        return reason

    def _scratch(self, live: Engine, events: Sequence[Event], users: Sequence[str] = ()) -> Engine:
        """An engine holding only what `events` touch of `live` (their users, the links they
        follow) and `users`, with the live watermark and timer order so ties resolve alike."""
        scratch = Engine(self.rules, dedup_window=None, follow_events=False)
        ids = [x for e in events for x in _ids(e)]
        for start in ids:  # only the links these events follow, not every link of the live engine
            here = start
            while here in live.links:
                scratch.links[here] = live.links[here]
                here = live.links[here]
        for uid in dict.fromkeys([*(live.resolve(x) for x in ids), *users]):
            data = live.dump_user(uid)
            if data is not None:
                scratch.load_user(uid, data)
        scratch.load_meta(live.dump_meta())
        return scratch

    def _bisect(
        self,
        batches: Sequence[Sequence[Event]],
        suspects: list[Suspect],
        bad: dict[Suspect, str],
        now: int,
        watermark: int,
    ) -> tuple[Suspect, str] | None:
        """The first suspect whose inclusion makes the step fail, by halving (a rebuild a trial)."""

        def failure(included: int) -> str | None:
            trial = dict(bad)
            trial.update(dict.fromkeys(suspects[included:], "trial"))
            try:
                self.step(self.recover(), batches, now=now, watermark=watermark, exclude=trial, commit=False)
            except NOT_THE_EVENTS:
                raise
            except Exception as exc:
                return _reason(exc)
            return None

        if not suspects or failure(len(suspects)) is None or failure(0) is not None:
            return None
        low, high = 0, len(suspects)  # failure(low) is None, failure(high) is not
        reason = ""
        while high - low > 1:
            middle = (low + high) // 2
            found = failure(middle)
            if found is None:
                low = middle
            else:
                high, reason = middle, found
        return suspects[high - 1], reason or (failure(high) or "unknown failure")


def outbox_rows(rules: Rules, fires: list[Fire], now: int) -> tuple[list[FireRow], list[NewDelivery]]:
    """The fire rows and, for each fire that is not suppressed nor held out, its deliveries."""
    triggers = {t.id: t for t in rules.triggers}
    rows: list[FireRow] = []
    deliveries: list[NewDelivery] = []
    for fire in fires:
        trigger = triggers[fire.trigger]
        holdout = fire.suppressed is None and in_holdout(trigger.id, fire.user_id, trigger.holdout)
        rows.append(
            FireRow(fire.fire_id, fire.trigger, fire.user_id, fire.key, fire.fire_time, fire.events, fire.suppressed,
                    fire.detail, now, holdout)
        )  # fmt: skip
        if fire.suppressed is None and not holdout:
            for action_id in trigger.actions:
                channel = rules.actions[action_id].type
                deliveries.append(NewDelivery(fire.fire_id, action_id, channel, trigger.id, fire.user_id, now))
    return rows, deliveries


def _ids(event: Event) -> list[str]:
    """The ids an event names (previousId of an alias included)."""
    previous = event.raw.get("previousId")
    return [x for x in (event.user_id, event.anonymous_id, previous) if isinstance(x, str)]


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _body(raw: dict[str, Any]) -> bytes:
    """The event as JSON, or a note saying it could not be encoded (the quarantine keeps what it can)."""
    try:
        return _encode(raw)
    except Exception as exc:
        return _encode({"unencodable": _reason(exc)})


def _timers_entries(engine: Engine, reasons: dict[str, str], until: int, now: int) -> list[QuarantineRow]:
    """A quarantine entry per user whose timers this step cancelled (what they were, and why)."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for uid, timer in engine.timers_set_aside:
        by_user.setdefault(uid, []).append(timer)
    engine.timers_set_aside = []
    for uid in by_user.keys() - reasons.keys():  # set aside as another id, merged into this user since
        reasons[uid] = next((r for x, r in reasons.items() if engine.resolve(x) == uid), "merged from a user set aside")
    return [
        QuarantineRow(0, f"timers:{uid}:{until}", uid, None, until, now, now, reasons[uid],
                      _encode({"timers": _encodable(timers), "user_id": uid, "until": until}),
                      retried_at=now, retry_decision=NOT_RETRYABLE)  # nothing to send again
        for uid, timers in by_user.items()
    ]  # fmt: skip


def _encodable(timers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timers as kept, or without their keys and events if those cannot be encoded
    (the replay needs only the user and the bound, which always can)."""
    try:
        _encode(timers)
    except Exception:
        return [{"trigger": t["trigger"], "deadline": t["deadline"]} for t in timers]
    return timers


def quarantine_kind(row: QuarantineRow) -> str:
    """ "timers" for a user's timers set aside (nothing to send again), "event" otherwise."""
    if row.message_id.startswith("timers:") and row.anonymous_id is None:
        body = _decode(row.body)
        if isinstance(body, dict) and "timers" in body and "type" not in body and "event" not in body:
            return "timers"
    return "event"


def _quarantine_row(event: Event, now: int, reason: str) -> QuarantineRow:
    return QuarantineRow(
        0, event.message_id, event.user_id, event.anonymous_id, event.ts, now, now, reason, _body(event.raw)
    )
