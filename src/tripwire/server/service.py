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

from tripwire.actions.policies import in_holdout
from tripwire.engine import Engine, Fire
from tripwire.errors import OverloadedError, StoreUnavailableError
from tripwire.events import Event, parse_event
from tripwire.rules import Rules, load_rules
from tripwire.server import views
from tripwire.store import FireRow, LogRow, NewDelivery, SqliteOutbox, SqliteStore, Store

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
    ) -> None:
        self.rules_path = Path(rules_path)
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.tick = tick
        self.max_queued_events = max_queued_events
        self.max_batch_events = max_batch_events
        self.store: Store = store if store is not None else SqliteStore(self.data_dir)
        self._outbox = SqliteOutbox(self.data_dir)
        self.rules: Rules = load_rules(self.rules_path)
        self.engine = Engine(self.rules, dedup_window=self.rules.settings.dedup_window)
        self.stats = ServiceStats()
        self.listeners: list[FireListener] = []
        self._queue: queue.Queue[_Submission | _Command | None] = queue.Queue()
        self._queued_events = 0
        self._queued_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self._failed: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, rebuild the engine from it, and start the writer."""
        await asyncio.to_thread(self._recover)
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
        return self._running and self._failed is None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _recover(self) -> None:
        self.store.open()
        engine = Engine(self.rules, dedup_window=self.rules.settings.dedup_window)
        meta = self.store.load_meta()
        if meta is not None:
            engine.load_meta(meta)
        engine.links = self.store.load_links()
        for uid, data in self.store.iter_users():
            engine.load_user(uid, data)
        for message_id, ts in self.store.accepted_ids_since(engine.watermark - engine.rules.settings.dedup_window):
            engine.remember(message_id, ts)
        pending = 0
        for row in self.store.accepted_after(engine.watermark):
            engine.force_accept(parse_event(_decode(row.body)))
            pending += 1
        engine.accepted = 0
        engine.dirty.clear()
        engine.dirty_links.clear()
        self.engine = engine
        log.info("recovered", users=len(engine.users), pending=pending, watermark=engine.watermark)

    # -- writes ------------------------------------------------------------------------------

    async def submit(self, events: list[Event]) -> list[str]:
        """Durably log `events` (validated, in arrival order); return each one's decision."""
        if not self._running or self._failed is not None:
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Command(lambda: self._swap_rules(rules), future, loop))
        await future
        return rules

    def _swap_rules(self, rules: Rules) -> None:
        old = self.engine
        new = Engine(rules, dedup_window=rules.settings.dedup_window)
        new.load_meta(old.dump_meta())
        new.links = old.links
        for uid in old.users:
            data = old.dump_user(uid)
            if data is not None:
                new.load_user(uid, data)
        new.seen = old.seen
        new._seen_order = old._seen_order
        for event in old.pending_events():
            new.force_accept(event)
        new.accepted = old.accepted
        new.counts = old.counts
        new.dirty = _touched_by_reload(old, new) | old.dirty
        new.dirty_links = old.dirty_links
        self.engine = new
        self.rules = rules
        log.info("rules reloaded", triggers=[t.id for t in rules.triggers])

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
            while count < self.max_batch_events:
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
            try:
                self._step(items)
            except Exception as exc:  # the engine is ahead of the store now: rebuild it
                log.exception("write failed; rebuilding the engine from the store")
                self._fail_all(items, exc)
                try:
                    self._recover()
                except Exception as again:
                    self._failed = again
                    log.exception("recovery failed; not taking events")
                    return

    def _step(self, items: list[_Submission | _Command]) -> None:
        engine = self.engine
        now = self.now_ms()
        rows: list[LogRow] = []
        answers: list[tuple[_Submission, list[str]]] = []
        for item in items:
            if isinstance(item, _Command):
                self._run_command(item)
                engine = self.engine
                continue
            decisions: list[str] = []
            for event in item.events:
                decision = engine.offer(event)
                decisions.append(decision)
                rows.append(
                    LogRow(0, event.message_id, event.user_id, event.anonymous_id, event.ts, now, decision,
                           _encode(event.raw))
                )  # fmt: skip
            answers.append((item, decisions))
        fires = engine.advance(now - engine.lateness)
        if rows or fires or engine.dirty or engine.dirty_links:
            dirty = engine.dirty
            engine.dirty = set()
            links = engine.dirty_links
            engine.dirty_links = {}
            with self.store.write() as batch:
                batch.append_events(rows)
                batch.save_users({uid: engine.dump_user(uid) for uid in dirty})
                if links:
                    batch.save_links(links)
                batch.save_meta(engine.dump_meta())
                if fires:
                    fire_rows, deliveries = self._outbox_rows(engine.rules, fires, now)
                    batch.add_fires(fire_rows)
                    batch.add_deliveries(deliveries)
            self.stats.commits += 1
        for item, answer in answers:
            with self._queued_lock:
                self._queued_events -= len(item.events)
            for outcome in answer:
                self.stats.decisions[outcome] += 1
            item.loop.call_soon_threadsafe(_settle, item.future, answer, None)
        if fires:
            for listener in self.listeners:
                listener(fires)

    def _outbox_rows(self, rules: Rules, fires: list[Fire], now: int) -> tuple[list[FireRow], list[NewDelivery]]:
        """The fire rows and, for each fire that is not suppressed nor held out, its deliveries."""
        triggers = {t.id: t for t in rules.triggers}
        rows: list[FireRow] = []
        deliveries: list[NewDelivery] = []
        for fire in fires:
            trigger = triggers[fire.trigger]
            holdout = fire.suppressed is None and in_holdout(trigger.id, fire.user_id, trigger.holdout)
            rows.append(_fire_row(fire, now, holdout))
            if fire.suppressed is None and not holdout:
                for action_id in trigger.actions:
                    channel = rules.actions[action_id].type
                    deliveries.append(NewDelivery(fire.fire_id, action_id, channel, trigger.id, fire.user_id, now))
        return rows, deliveries

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
        }

    def triggers(self) -> list[dict[str, Any]]:
        return views.triggers(self.rules, self.store.fire_counts())

    def fires(
        self, *, trigger: str | None = None, user: str | None = None, since_ms: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return [views.fire(row) for row in self.store.fires(trigger=trigger, user=user, since=since_ms, limit=limit)]

    def user(self, uid: str) -> dict[str, Any] | None:
        return views.user(self.store, self.rules, uid, self._outbox)

    def events(self, *, user: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        users = None if user is None else [user, *self.store.links_to(user)]
        return [views.event(row) for row in self.store.events(users=users, limit=limit)]


def _touched_by_reload(old: Engine, new: Engine) -> set[str]:
    """The users whose saved state a reload changes: those holding state of a trigger (or a
    guard) that was changed or removed. Only they are written again, not every user."""
    kept = {(p.trigger.id, p.trigger.fingerprint) for p in new.plan.triggers}
    gone = {p.index for p in old.plan.triggers if (p.trigger.id, p.trigger.fingerprint) not in kept}
    patterns = {slot.pattern.text for slot in new.plan.guard_slots}
    gone_guards = {g for g, slot in enumerate(old.plan.guard_slots) if slot.pattern.text not in patterns}
    touched = set()
    for uid, user in old.users.items():
        if (
            any(user.slots[i] is not None for i in gone)
            or (user.last_fire is not None and not gone.isdisjoint(user.last_fire))
            or (user.history is not None and not gone_guards.isdisjoint(user.history))
        ):
            touched.add(uid)
    return touched


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


def _fire_row(fire: Fire, now: int, holdout: bool) -> FireRow:
    return FireRow(
        fire.fire_id, fire.trigger, fire.user_id, fire.key, fire.fire_time, fire.events, fire.suppressed,
        fire.detail, now, holdout,
    )  # fmt: skip
