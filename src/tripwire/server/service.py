"""The live service: one writer thread owns the engine and the store.

HTTP handlers hand validated events to `submit`; the writer takes everything queued,
decides acceptance with the engine in arrival order, advances the watermark with the
wall clock, and writes log rows, user states, links and fires in one transaction.
Only after that commit are the waiting requests answered, so an acknowledged event is
on disk, and a crash loses nothing acknowledged and repeats no fire.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog

from tripwire.engine import Engine, Fire
from tripwire.errors import AlreadyRetriedError, NotRetryableError, OverloadedError, StoreUnavailableError
from tripwire.events import Event, parse_event
from tripwire.pipeline import Pipeline, quarantine_kind
from tripwire.rules import Rules, load_rules
from tripwire.server import views
from tripwire.store import Outbox, QuarantineRow, SqliteOutbox, SqliteStore, Store

log = structlog.get_logger("tripwire.service")
_encode = msgspec.json.encode
_decode = msgspec.json.decode

FireListener = Callable[[list[Fire]], None]
CHECKPOINT_SECONDS = 1.0


@dataclass
class _Submission:
    events: list[Event]
    future: asyncio.Future[list[str]]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Command:
    run: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class ServiceStats:
    """What the writer has done since start, for /metrics and /readyz."""

    commits: int = 0
    quarantined: int = 0
    last_commit_ms: float = 0.0
    decisions: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "late": 0, "duplicate": 0})


class Service:
    """Owns the engine and the store of one `tripwire serve`."""

    def __init__(
        self,
        rules_path: str | Path,
        data_dir: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        tick: float = 0.1,
        max_queued_events: int = 200_000,
        max_batch_events: int = 20_000,
        store: Store | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.rules_path = Path(rules_path)
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.tick = tick
        self.max_queued_events = max_queued_events
        self.max_batch_events = max_batch_events
        self.store: Store = store if store is not None else SqliteStore(self.data_dir)
        self._outbox: Outbox = outbox if outbox is not None else SqliteOutbox(self.data_dir)
        self.rules: Rules = load_rules(self.rules_path)
        self.pipeline = Pipeline(self.store, self.rules)
        self.engine = Engine(self.rules, dedup_window=self.rules.settings.dedup_window, follow_events=False)
        self.stats = ServiceStats()
        self.listeners: list[FireListener] = []
        self._queue: queue.Queue[_Submission | _Command | None] = queue.Queue()
        self._queued_events = 0
        self._queued_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self._broken: BaseException | None = None  # the store cannot take writes; the engine needs a rebuild
        self._hold_until: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, rebuild the engine from it, and start the writer."""
        await asyncio.to_thread(self._start)
        self._running = True
        self._thread = threading.Thread(target=self._writer, name="tripwire-writer", daemon=True)
        self._thread.start()
        threading.Thread(target=self._checkpointer, name="tripwire-checkpoint", daemon=True).start()

    async def stop(self) -> None:
        """Stop taking events, write everything queued, commit and close."""
        if not self._running:
            return
        self._running = False
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self.store.close()

    def ready(self) -> bool:
        return self._running and self._broken is None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _start(self) -> None:
        self.store.open()
        self.engine = self.pipeline.recover()
        resumed = self.store.load_meta() is not None
        now = self.now_ms()
        if resumed and self.engine.watermark < now - self.engine.lateness:
            # Events SDKs send again after the downtime are not late while the watermark waits (SPEC §2).
            self._hold_until = now + self.rules.settings.restart_grace
        log.info(
            "recovered", users=len(self.engine.users), pending=self.engine.pending_count(),
            watermark=self.engine.watermark, holding_ms=self.rules.settings.restart_grace if self._hold_until else 0,
        )  # fmt: skip

    def live_watermark(self, now: int) -> int:
        """Where the watermark goes at wall time `now`: `now - allowed_lateness`, never further
        (SPEC §2); for `restart_grace` after a restart it stays where it was saved."""
        if self._hold_until is not None:
            if now < self._hold_until:
                return self.engine.watermark
            self._hold_until = None
        return now - self.engine.lateness

    # -- writes ------------------------------------------------------------------------------

    async def submit(self, events: list[Event]) -> list[str]:
        """Durably log `events` (validated, in arrival order); return each one's decision."""
        if not self._running or self._broken is not None:
            raise StoreUnavailableError("tripwire is not taking events right now")
        with self._queued_lock:
            if self._queued_events + len(events) > self.max_queued_events:
                raise OverloadedError(retry_after=1.0)
            self._queued_events += len(events)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str]] = loop.create_future()
        self._queue.put(_Submission(events, future, loop))
        return await future

    async def reload_rules(self) -> Rules:
        """Validate the rules file again, then swap it in; unchanged triggers keep their state."""
        rules = await asyncio.to_thread(load_rules, self.rules_path)
        await self._command(lambda: self._swap_rules(rules))
        return rules

    async def retry_quarantined(self, entry: int | None = None) -> list[dict[str, Any]]:
        """Send quarantined events through again (one, or every one not retried yet), as new
        arrivals: each gets a decision like any event, and a poison one is quarantined again."""
        return list(await self._command(lambda: self._retry_quarantined(entry)))

    async def _command(self, run: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Command(run, future, loop))
        return await future

    def _swap_rules(self, rules: Rules) -> None:
        self.engine = self.pipeline.reload(self.engine, rules)
        self.rules = rules
        log.info("rules reloaded", triggers=[t.id for t in rules.triggers])

    def _retry_quarantined(self, entry: int | None) -> list[dict[str, Any]]:
        rows = self.store.quarantined(limit=1_000, pending_only=True) if entry is None else []
        if entry is not None:
            found = self.store.quarantine_entry(entry)
            if found is None:
                raise KeyError(entry)
            if quarantine_kind(found) == "timers":
                raise NotRetryableError(entry, "it holds a user's timers set aside, not an event to send again")
            if found.retried_at is not None:
                # Sent through once already: a second time would accept the same event twice.
                raise AlreadyRetriedError(entry, found.retry_decision or "")
            rows = [found]
        rows = [row for row in rows if quarantine_kind(row) == "event"]
        rows.reverse()  # in the order they came
        events: list[Event] = []
        kept: list[QuarantineRow] = []
        for row in rows:
            try:
                event = parse_event(_decode(row.body))  # corrected for skew already: a second time changes nothing
            except Exception as exc:  # the kept body itself is unusable: say so, keep it
                log.warning("quarantined event cannot be parsed", entry=row.id, error=str(exc))
                continue
            events.append(event)
            kept.append(row)
        if not events:
            return []
        try:
            decisions = self._round([events], retried=[row.id for row in kept])[0]
        except Exception as exc:
            self._broken = exc  # the engine is ahead of the store now: rebuilt before the next round
            log.exception("write failed and no event explains it; not taking events until the store works")
            raise StoreUnavailableError(f"could not write: {exc}") from None
        pairs = zip(kept, decisions, strict=True)
        return [{"id": row.id, "message_id": row.message_id, "decision": decision} for row, decision in pairs]

    def _checkpointer(self) -> None:
        """Keep the WAL short, apart from the writer, so no commit pays for a checkpoint."""
        while self._running:
            time.sleep(CHECKPOINT_SECONDS)
            try:
                self.store.checkpoint()
            except Exception:
                log.exception("WAL checkpoint failed; trying again later")

    def _writer(self) -> None:
        stopping = False
        while not stopping:
            items: list[_Submission | _Command] = []
            try:
                first = self._queue.get(timeout=self.tick)
            except queue.Empty:
                first = None if not self._running else _IDLE
            if first is None:
                stopping = True
            elif first is not _IDLE:
                items.append(first)
            count = sum(len(i.events) for i in items if isinstance(i, _Submission))
            # A command (a reload, a retry) ends the round: what came after it waits for the next.
            command = any(isinstance(i, _Command) for i in items)
            while count < self.max_batch_events and not command:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    continue
                items.append(more)
                if isinstance(more, _Submission):
                    count += len(more.events)
                else:
                    command = True
            if self._broken is not None and not self._rebuild():
                self._fail_all(items, self._broken)
                continue
            submissions = [i for i in items if isinstance(i, _Submission)]
            outcome = self._step(submissions)
            self._answer(submissions, outcome)
            commands = [i for i in items if isinstance(i, _Command)]
            if isinstance(outcome, BaseException):
                self._fail_all(list(commands), outcome)  # never run on an engine ahead of the store
            else:
                for pending in commands:
                    self._run_command(pending)

    def _rebuild(self) -> bool:
        """After the store failed: try to rebuild the engine from it (True once it works)."""
        try:
            engine = self.pipeline.recover()
            self.pipeline.check_writable(engine)  # ready only once a write commits again
            self.engine = engine
        except Exception as exc:
            self._broken = exc
            time.sleep(min(1.0, self.tick * 10))
            return False
        log.info("store writable again; taking events")
        self._broken = None
        return True

    def _step(self, submissions: list[_Submission]) -> list[list[str]] | BaseException:
        """One round over the queued submissions: each one's decisions, or why none could be written."""
        try:
            return self._round([s.events for s in submissions])
        except Exception as exc:
            self._broken = exc
            log.exception("write failed and no event explains it; not taking events until the store works")
            return StoreUnavailableError(f"could not write: {exc}")

    def _round(self, batches: list[list[Event]], retried: list[int] | None = None) -> list[list[str]]:
        now = self.now_ms()
        watermark = self.live_watermark(now)
        try:
            result = self.pipeline.step(self.engine, batches, now=now, watermark=watermark, retried=retried or ())
        except Exception as exc:
            log.warning("write failed; looking for the events at fault", error=str(exc))
            self.engine, result = self.pipeline.isolate(
                batches, now=now, watermark=watermark, error=exc, retried=retried or ()
            )
            self.stats.quarantined += len(result.quarantined)
        if result.wrote:
            self.stats.commits += 1
        for listener in self.listeners if result.fires else ():
            try:
                listener(result.fires)
            except Exception:  # committed already: a listener's failure must not fail the round
                log.exception("a fire listener failed")
        return result.decisions

    def _answer(self, submissions: list[_Submission], outcome: list[list[str]] | BaseException) -> None:
        for index, item in enumerate(submissions):
            with self._queued_lock:
                self._queued_events -= len(item.events)
            if isinstance(outcome, BaseException):
                item.loop.call_soon_threadsafe(_settle, item.future, None, outcome)
                continue
            answer = outcome[index]
            for decision in answer:
                self.stats.decisions[decision] = self.stats.decisions.get(decision, 0) + 1
            item.loop.call_soon_threadsafe(_settle, item.future, answer, None)

    def _run_command(self, command: _Command) -> None:
        try:
            result = command.run()
        except Exception as exc:
            command.loop.call_soon_threadsafe(_settle, command.future, None, exc)
        else:
            command.loop.call_soon_threadsafe(_settle, command.future, result, None)

    def _fail_all(self, items: list[_Submission | _Command], exc: BaseException) -> None:
        error = StoreUnavailableError(f"could not write: {exc}")
        for item in items:
            if isinstance(item, _Submission):
                with self._queued_lock:
                    self._queued_events -= len(item.events)
            item.loop.call_soon_threadsafe(_settle, item.future, None, error)

    # -- reads -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        engine = self.engine
        now = self.now_ms()
        due = engine.next_due()
        lag = max(0, now - engine.lateness - due) if due is not None and due < now - engine.lateness else 0
        return {
            "watermark": engine.watermark,
            "engine_lag_ms": lag,
            "timer_backlog": engine.timer_count(),
            "pending_events": engine.pending_count(),
            "queued_events": self._queued_events,
            "users": len(engine.users),
            "commits": self.stats.commits,
            "quarantined": self.stats.quarantined,
            "holding_watermark": self._hold_until is not None,
            "store_ok": self._broken is None,
        }

    def triggers(self) -> list[dict[str, Any]]:
        return views.triggers(self.rules, self.store.fire_counts())

    def fires(
        self, *, trigger: str | None = None, user: str | None = None, since_ms: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return [views.fire(row) for row in self.store.fires(trigger=trigger, user=user, since=since_ms, limit=limit)]

    def user(self, uid: str) -> dict[str, Any] | None:
        return views.user(self.store, self.rules, uid, self._outbox)

    def quarantined(self, *, limit: int = 100, pending_only: bool = False) -> list[dict[str, Any]]:
        return [views.quarantined(row) for row in self.store.quarantined(limit=limit, pending_only=pending_only)]

    def quarantine_counts(self) -> tuple[int, int]:
        return self.store.quarantine_counts()

    def events(self, *, user: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        users = None if user is None else [user, *self.store.links_to(user)]
        return [views.event(row) for row in self.store.events(users=users, limit=limit)]


class _Idle:
    """The writer woke with nothing queued: it still advances the watermark."""


_IDLE: Any = _Idle()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
