"""In-app messages: stored in the user's inbox and pushed at once to the user's open streams.

`Inbox` joins the durable store and an in-process feed: `add` writes the message, then
every open `GET /v1/inbox/stream` of that user receives it. The store keeps one message
per (fire_id, action), so a retried delivery neither shows nor streams twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from tripwire.actions.base import Channel, Message, Outcome
from tripwire.rules import ActionConfig
from tripwire.store.inbox import InboxItem, InboxStore, NewInboxItem

DEFAULT_TTL_MS = 30 * 86_400_000
# A stream that falls this far behind is closed; its client reconnects with Last-Event-ID.
STREAM_BACKLOG = 100


class Subscription:
    """One open stream of one user: new messages arrive on `queue`, None when the stream must end."""

    def __init__(self, feed: InboxFeed, user_id: str) -> None:
        self.feed = feed
        self.user_id = user_id
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[InboxItem | None] = asyncio.Queue(STREAM_BACKLOG + 1)

    def deliver(self, item: InboxItem | None) -> None:
        """Hand `item` to the stream from any thread."""
        with contextlib.suppress(RuntimeError):  # the stream's loop has closed: nobody is listening
            self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: InboxItem | None) -> None:
        if self.queue.full():
            return  # the end marker is already waiting
        if item is not None and self.queue.qsize() >= STREAM_BACKLOG:
            item = None  # too far behind: end the stream rather than grow without bound
        self.queue.put_nowait(item)

    async def next(self, timeout: float) -> InboxItem | None:
        """The next message, or None when the stream must end; TimeoutError after `timeout` seconds of quiet."""
        return await asyncio.wait_for(self.queue.get(), timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.feed.unsubscribe(self)


class InboxFeed:
    """In-process pub/sub of new inbox messages, keyed by user id; safe to publish from any thread."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def subscribe(self, user_id: str) -> Subscription:
        """A subscription to `user_id`'s new messages (call in the stream's event loop; use it as a context)."""
        subscription = Subscription(self, user_id)
        with self._lock:
            if self._closed:
                subscription.queue.put_nowait(None)
            else:
                self._subscribers.setdefault(user_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscription.user_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[subscription.user_id]

    def publish(self, item: InboxItem) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(item.user_id, ()))
        for subscription in subscribers:
            subscription.deliver(item)

    def subscribers(self, user_id: str) -> int:
        with self._lock:
            return len(self._subscribers.get(user_id, ()))

    def close(self) -> None:
        """End every open stream (at shutdown, so the HTTP server need not wait for them)."""
        with self._lock:
            self._closed = True
            subscribers = [s for group in self._subscribers.values() for s in group]
            self._subscribers.clear()
        for subscription in subscribers:
            subscription.deliver(None)


class Inbox:
    """The inbox of a server: the store, written off the event loop, and the feed of new messages."""

    def __init__(
        self, store: InboxStore, feed: InboxFeed | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.feed = feed if feed is not None else InboxFeed()
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def add(
        self, user_id: str, fire_id: str, action: str, *, title: str, body: str, url: str | None, ttl_ms: int | None
    ) -> tuple[InboxItem, bool]:
        """Store a message once per (fire_id, action) and, when it is new, stream it to the user."""
        now = self.now_ms()
        new = NewInboxItem(user_id, fire_id, action, title, body, url, now, None if ttl_ms is None else now + ttl_ms)
        item, created = await asyncio.to_thread(self.store.add, new)
        if created:
            self.feed.publish(item)
        return item, created

    async def messages(
        self, user_id: str, *, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> list[InboxItem]:
        now = self.now_ms()
        return await asyncio.to_thread(
            lambda: self.store.messages(user_id, now=now, limit=limit, before=before, after=after)
        )

    async def unread(self, user_id: str) -> int:
        now = self.now_ms()
        return await asyncio.to_thread(lambda: self.store.unread(user_id, now=now))

    async def mark_read(self, user_id: str, ids: Sequence[int] | None) -> list[int]:
        now = self.now_ms()
        return await asyncio.to_thread(lambda: self.store.mark_read(user_id, ids, now=now))

    async def purge(self) -> int:
        now = self.now_ms()
        return await asyncio.to_thread(lambda: self.store.purge(now=now))


class InAppChannel(Channel):
    """Stores the rendered title, body and url in the user's inbox; idempotent on (fire_id, action)."""

    type = "in_app"

    def __init__(self, action: ActionConfig, http: httpx.AsyncClient, *, inbox: Inbox) -> None:
        super().__init__(action, http)
        self.inbox = inbox

    async def send(self, message: Message) -> Outcome:
        title = (message.render("title") or "").strip()
        body = (message.render("body") or "").strip()
        url = (message.render("url") or "").strip() or None
        ttl: Any = self.action.options.get("ttl", DEFAULT_TTL_MS)
        item, created = await self.inbox.add(
            str(message.user["id"]), message.idempotency_key, self.action.id,
            title=title, body=body, url=url, ttl_ms=int(ttl),
        )  # fmt: skip
        return Outcome.success(inbox_id=item.id, created=created)
