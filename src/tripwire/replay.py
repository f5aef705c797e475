"""Replay: run a stream of events through the engine from the start, as a batch job."""

from __future__ import annotations

import gzip
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import msgspec

from tripwire.engine import ACCEPTED, Engine, Fire
from tripwire.engine.core import NEVER
from tripwire.engine.snapshot import saved_watermark
from tripwire.errors import EventError
from tripwire.events import Event, parse_event
from tripwire.pipeline import TIMERS_QUARANTINED
from tripwire.rules import Rules
from tripwire.store import Store
from tripwire.timestamps import parse_ms

BATCH = 2_000
_decode = msgspec.json.decode


@dataclass
class BadEvent:
    """An input line that could not be used, with where and why."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class ReplayStats:
    """What a replay read and decided, and its fires per trigger."""

    read: int = 0
    accepted: int = 0
    late: int = 0
    duplicate: int = 0
    quarantined: int = 0
    timers_quarantined: int = 0  # users' timers the server set aside, in a log replay
    bad: int = 0
    fires: Counter[str] = field(default_factory=Counter)
    decided: Counter[str] = field(default_factory=Counter)  # decisions recorded in a log: late, quarantined ...
    suppressed: Counter[str] = field(default_factory=Counter)
    bad_events: list[BadEvent] = field(default_factory=list)

    def count_fire(self, fire: Fire) -> None:
        if fire.suppressed is None:
            self.fires[fire.trigger] += 1
        else:
            self.suppressed[fire.trigger] += 1


@dataclass
class ReplayResult:
    fires: list[dict[str, Any]]
    stats: ReplayStats


class Replayer:
    """Feeds decoded events to an engine in batches; fires go to `emit` as they become final."""

    def __init__(self, rules: Rules, emit: Callable[[Fire], None], *, keep_bad: int = 1_000) -> None:
        self.engine = Engine(rules, dedup_window=None, track_dirty=False)
        self.emit = emit
        self.stats = ReplayStats()
        self.keep_bad = keep_bad
        self._batch: list[Event] = []
        self._logged = 0
        self._floor = NEVER

    def for_log(self) -> None:
        """Replay a server's log: its rows carry the watermark they were decided at, and the
        engine follows those, never the events' own times (as the live server did)."""
        assert self.stats.read == 0, "choose the mode before adding events"
        self.engine = Engine(self.engine.rules, dedup_window=None, track_dirty=False, follow_events=False)

    def bad(self, line: int, fld: str, message: str) -> None:
        self.stats.read += 1
        self.stats.bad += 1
        if len(self.stats.bad_events) < self.keep_bad:
            self.stats.bad_events.append(BadEvent(line, fld, message))

    def add(self, obj: Any, line: int) -> None:
        """Add one decoded event object (line is its 1-based position, for errors)."""
        try:
            event = parse_event(obj)
        except EventError as exc:
            self.bad(line, exc.field, exc.message)
            return
        self.stats.read += 1
        self._batch.append(event)
        if len(self._batch) >= BATCH:
            self.flush_batch()

    def add_line(self, text: bytes | str, line: int) -> None:
        """Add one JSONL line; blank lines are skipped, malformed JSON is reported."""
        if not text or text.isspace():  # stops at the first other byte; strip() copies the line
            return
        try:
            obj = _decode(text)
        except msgspec.DecodeError as exc:
            self.bad(line, "(json)", f"not valid JSON: {exc}")
            return
        self.add(obj, line)

    def add_logged(self, obj: Any, decision: str, line: int, watermark: int | None = None) -> None:
        """Add an event from a server's log with the acceptance the server decided and the
        watermark it decided it at (None in logs written before watermarks were recorded).

        A row of timers the server set aside (their fire could not be written) cancels them
        here too, at the same point."""
        engine = self.engine
        if watermark is not None and watermark > engine.watermark:
            # The server had applied exactly what this watermark allows before this event came.
            self._emit(engine.advance(watermark))
        if decision == TIMERS_QUARANTINED:
            engine.set_timers_aside(obj["user_id"], obj["until"])
            self.stats.timers_quarantined += 1
            return
        self.stats.read += 1
        if decision != ACCEPTED:
            self.stats.decided[decision] += 1
            return
        try:
            event = parse_event(obj)
        except EventError as exc:  # a limit added since the server accepted it; the server quarantines it too
            self.stats.decided["quarantined"] += 1
            self.stats.bad_events.append(BadEvent(line, exc.field, exc.message))
            return
        engine.force_accept(event)
        if watermark is None:  # the older rule: each accepted event moved the watermark
            self._floor = max(self._floor, event.ts - engine.lateness)
        self._logged += 1
        if self._logged % BATCH == 0:
            self._emit(engine.advance(self._floor))

    def finish_at(self, watermark: int) -> ReplayStats:
        """End where a server stopped: apply only what its watermark allowed."""
        self.flush_batch()
        self._emit(self.engine.advance(watermark))
        return self._final_stats()

    def flush_batch(self) -> None:
        engine = self.engine
        offer = engine.offer
        for event in self._batch:
            offer(event)
        self._batch.clear()
        self._emit(engine.advance())

    def finish(self, until: int | None = None) -> ReplayStats:
        self.flush_batch()
        self._emit(self.engine.finish(until))
        return self._final_stats()

    def _final_stats(self) -> ReplayStats:
        counts = self.engine.counts
        self.stats.accepted = self.engine.accepted
        self.stats.late = counts["late"] + self.stats.decided["late"]
        self.stats.duplicate = counts["duplicate"] + self.stats.decided["duplicate"]
        self.stats.quarantined = self.stats.decided["quarantined"]
        return self.stats

    def _emit(self, fires: list[Fire]) -> None:
        for fire in fires:
            self.stats.count_fire(fire)
            self.emit(fire)


def parse_until(text: str | None) -> int | None:
    """`--until` as epoch ms; ValueError with a clear message when malformed."""
    if text is None:
        return None
    try:
        return parse_ms(text)
    except ValueError:
        raise ValueError(f"--until {text!r} is not an ISO-8601 time such as 2026-03-02T00:00:00Z") from None


def replay_events(rules: Rules, events: Iterable[Any], *, until: str | None = None) -> ReplayResult:
    """Replay event objects (dicts, in arrival order); return every fire as SPEC §4 dicts."""
    fires: list[dict[str, Any]] = []
    replayer = Replayer(rules, lambda fire: fires.append(fire.to_dict()))
    for line, obj in enumerate(events, start=1):
        replayer.add(obj, line)
    return ReplayResult(fires, replayer.finish(parse_until(until)))


@contextmanager
def open_events(path: str) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """Open EVENTS (`-` is stdin, `.gz` is gunzipped): yields (lines, raw file for progress)."""
    if path == "-":
        yield sys.stdin.buffer, sys.stdin.buffer
        return
    with Path(path).open("rb") as raw:
        if path.endswith(".gz"):
            with gzip.open(raw, "rb") as lines:
                yield cast(IO[bytes], lines), raw
        else:
            yield raw, raw


def replay_store(replayer: Replayer, store: Store, until: int | None) -> ReplayStats:
    """Replay a server's log with the decisions it recorded.

    Without `until`, it ends at the server's last committed watermark, and so gives
    exactly the fires the server gave; with `until`, it ends as a file replay does.
    """
    meta = store.load_meta()
    replayer.for_log()
    for row in store.iter_log():
        replayer.add_logged(_decode(row.body), row.decision, row.seq, row.watermark)
    if until is None and meta is not None:
        return replayer.finish_at(saved_watermark(meta))
    return replayer.finish(until)
