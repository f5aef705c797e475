"""The dispatcher: claims due deliveries, applies send-time policies, sends, records, retries.

At least once: a delivery is recorded only after its send returned, so a crash in
between sends it again after restart, with the same idempotency key (the fire_id),
which receivers use to drop the repeat.

Whatever goes wrong with one delivery (its templates on this user's data, its channel,
reading its fire) is an attempt of that delivery, recorded and counted against the
action's `max_attempts`; it never stops or spins the loop that serves the others. What an
attempt's error says is stored with URLs and tokens redacted (`tripwire.redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import structlog

from tripwire.actions.base import Channel, Message, Outcome
from tripwire.actions.policies import backoff_ms, quiet_until, user_zone
from tripwire.actions.transport import Resolver, delivery_client, system_resolver
from tripwire.durations import format_duration
from tripwire.engine.snapshot import describe_user
from tripwire.redact import redact_text
from tripwire.rules import ActionConfig, Rules
from tripwire.rules.templates import TemplateError
from tripwire.store import Attempt, DeliveryRow, Outbox, Store
from tripwire.store.outbox import DEAD, DELIVERED, DROPPED, PENDING
from tripwire.timestamps import format_ms

log = structlog.get_logger("tripwire.dispatcher")
_decode = msgspec.json.decode

ChannelFactory = Callable[[ActionConfig, httpx.AsyncClient], Channel]
# (outcome: ok | retry | failed, action id, latency in ms)
OutcomeListener = Callable[[str, str, float], None]


class RateLimiter:
    """A token bucket: at most `max` sends per `per_ms`, waiting for a token when there is none."""

    def __init__(self, max_: int, per_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = max_
        self.rate = max_ / (per_ms / 1000)
        self.tokens = float(max_)
        self.clock = clock
        self.stamp = clock()

    async def acquire(self) -> None:
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Dispatcher:
    """Sends the outbox of one server, honouring each action's concurrency and rate limit."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        rules: Callable[[], Rules],
        make_channel: ChannelFactory,
        *,
        clock: Callable[[], float] = time.time,
        poll: float = 0.2,
        lease_ms: int = 300_000,
        rng: random.Random | None = None,
        resolver: Resolver = system_resolver,
        release_at_start: bool = True,
        log_of: Callable[[DeliveryRow], Store] | None = None,
    ) -> None:
        self.release_at_start = release_at_start  # one node's outbox: every lease left is its own
        # The log holding a delivery's user and events: a cluster keeps one per partition.
        self.log_of = log_of if log_of is not None else (lambda _row: store)
        self.store = store
        self.outbox = outbox
        self.rules = rules
        self.make_channel = make_channel
        self.clock = clock
        self.poll = poll
        self.lease_ms = lease_ms
        self.rng = rng or random.Random()
        self.resolver = resolver
        self.listeners: list[OutcomeListener] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._channels: dict[str, tuple[ActionConfig, Channel]] = {}
        self._limits: dict[str, tuple[asyncio.Semaphore, RateLimiter | None]] = {}
        self._user_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # by allow_private: every connection of the other one goes to a checked public address
        self._http: dict[bool, httpx.AsyncClient] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def wake(self) -> None:
        """New deliveries may be due (call from the event loop's thread)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until `stop`; deliveries in flight at stop finish first."""
        self._http = {allow: delivery_client(allow_private=allow, resolver=self.resolver) for allow in (False, True)}
        if self.release_at_start:
            released = await asyncio.to_thread(self.outbox.release_leases, self.now_ms())
            if released:
                log.info("deliveries resumed after a restart", count=released)
        try:
            while not self._stopping:
                try:
                    rows = await asyncio.to_thread(self.outbox.claim, self.now_ms(), 100, self.lease_ms)
                except Exception:  # the store, not a delivery: wait a poll and claim again
                    log.exception("cannot claim deliveries; trying again")
                    rows = []
                for row in rows:
                    task = asyncio.create_task(self.deliver(row))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if len(rows) == 100:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            for client in self._http.values():
                await client.aclose()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _channel(self, action: ActionConfig) -> Channel:
        current = self._channels.get(action.id)
        if current is None or current[0] != action:
            http = self._http[bool(action.options.get("allow_private", False))]
            current = self._channels[action.id] = (action, self.make_channel(action, http))
            rate = RateLimiter(*action.rate_limit) if action.rate_limit else None
            self._limits[action.id] = (asyncio.Semaphore(action.concurrency), rate)
        return current[1]

    async def deliver(self, row: DeliveryRow) -> None:
        """One attempt at one delivery, after the send-time policies; a failure of any kind is an attempt."""
        try:
            await self._deliver(row)
        except Exception as exc:
            log.exception("delivery failed unexpectedly", delivery=row.id, action=row.action)
            action = self.rules().actions.get(row.action)
            max_attempts = action.max_attempts if action is not None else 1
            outcome = Outcome.failure(f"unexpected {type(exc).__name__}: {exc}")
            try:
                await self._record(row, row.action, max_attempts, outcome, self.now_ms(), 0.0)
            except Exception:  # the store cannot take it either: the lease runs out and it is claimed again
                log.exception("cannot record the attempt; the delivery waits for its lease to end", delivery=row.id)

    async def _deliver(self, row: DeliveryRow) -> None:
        rules = self.rules()
        action = rules.actions.get(row.action)
        now = self.now_ms()
        if action is None:
            reason = f"the action {row.action!r} is no longer in the rules"
            await asyncio.to_thread(self.outbox.drop, row, DEAD, reason, now)
            return
        channel = self._channel(action)
        semaphore, rate = self._limits[action.id]
        message = await asyncio.to_thread(self._message, row, action)
        async with self._user_locks[row.user_id]:
            if await self._held_or_dropped(row, action, rules, message.user["traits"]):
                return
            started, tick = self.now_ms(), time.perf_counter()
            try:  # off the event loop: a render is bounded, but may take a moment
                await asyncio.to_thread(message.prepare)
            except TemplateError as exc:
                outcome = Outcome.failure(f"template {exc}", permanent=True)
                latency = (time.perf_counter() - tick) * 1000
                await self._record(row, action.id, action.max_attempts, outcome, started, latency)
                return
            async with semaphore:
                if rate is not None:
                    await rate.acquire()
                started = self.now_ms()
                tick = time.perf_counter()
                outcome = await channel.attempt(message)
                latency = (time.perf_counter() - tick) * 1000
            await self._record(row, action.id, action.max_attempts, outcome, started, latency)

    async def _held_or_dropped(self, row: DeliveryRow, action: ActionConfig, rules: Rules, traits: Any) -> bool:
        now = self.now_ms()
        quiet = rules.settings.quiet_hours
        if quiet is not None and action.type in quiet.channels:
            zone = user_zone(traits, quiet.default_timezone)
            until = quiet_until(quiet, zone, now)
            if until is not None:
                reason = f"quiet hours in {zone.key}: held until {format_ms(until)}"
                await asyncio.to_thread(self.outbox.hold, row, until, reason, now)
                return True
        for cap in rules.settings.frequency_caps:
            if cap.channel is not None and cap.channel != action.type:
                continue
            sent = await asyncio.to_thread(self.outbox.delivered_since, row.user_id, now - cap.per, cap.channel)
            if sent >= cap.max:
                scope = f" on {cap.channel}" if cap.channel else ""
                reason = f"frequency cap: {sent} deliveries{scope} to this user in the last {format_duration(cap.per)}"
                await asyncio.to_thread(self.outbox.drop, row, DROPPED, reason, now)
                return True
        return False

    def _message(self, row: DeliveryRow, action: ActionConfig) -> Message:
        log_store = self.log_of(row)
        fire_row = log_store.fire(row.fire_id)
        if fire_row is None:
            raise LookupError(f"the fire {row.fire_id} of delivery {row.id} is not in the store")
        fire = {
            "trigger": fire_row.trigger,
            "user_id": fire_row.user_id,
            "key": fire_row.key,
            "fire_time": format_ms(fire_row.fire_time),
            "fire_id": fire_row.fire_id,
            "events": list(fire_row.events),
            "suppressed": fire_row.suppressed,
        }
        state = log_store.user_state(row.user_id)
        traits = describe_user(state)["traits"] if state is not None else {}
        events = [_decode(e.body) for e in log_store.events_by_id(list(fire_row.events))]
        return Message(row.id, action, fire, {"id": row.user_id, "traits": traits}, events, row.attempts + 1)

    async def _record(
        self, row: DeliveryRow, action_id: str, max_attempts: int, outcome: Outcome, started: int, latency: float
    ) -> None:
        attempt_no = row.attempts + 1
        # What went wrong often quotes the other side (a receiver echoing the Authorization header,
        # a URL with its token in an httpx error): it is stored, and shown by the admin API and the CLI.
        error = None if outcome.error is None else redact_text(outcome.error)
        if outcome.ok:
            status, next_at, reason, kind = DELIVERED, row.next_at, None, "ok"
        elif outcome.permanent or attempt_no >= max_attempts:
            why = "permanent failure" if outcome.permanent else f"gave up after {attempt_no} attempts"
            status, next_at, reason, kind = DEAD, row.next_at, f"{why}: {error}", "failed"
        else:
            delay = backoff_ms(attempt_no, self.rng.random(), outcome.retry_after)
            next_at = self.now_ms() + delay
            status, reason, kind = PENDING, f"retry {attempt_no + 1} at {format_ms(next_at)}: {error}", "retry"
        attempt = Attempt(attempt_no, started, kind, outcome.status, latency, error)
        await asyncio.to_thread(self.outbox.finish, row, attempt, status=status, next_at=next_at, reason=reason)
        if status == DEAD:
            log.warning("delivery dead", delivery=row.id, action=action_id, reason=reason)
        for listener in self.listeners:
            try:
                listener(kind, action_id, latency)
            except Exception:  # a metric must not turn a recorded attempt into a second one
                log.exception("an outcome listener failed", listener=repr(listener))
