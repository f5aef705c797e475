"""Write a realistic Segment-format event stream for the shop example, of any size.

    python examples/shop/generate.py --events 1000000 --users 100000 --seed 7 \\
        --out shop.jsonl.gz

The stream models shoppers in sessions over days of event time: page and screen
views, product views, carts, purchases (single-item "buy now" with a product_id,
or a full cart checkout without one), song previews, searches; anonymous visitors
who later log in (an identify with both anonymousId and userId); identify traits
(email, plan, timezone). Arrival order is mostly event-time order with a few hundred
milliseconds of jitter, about 1% a couple of seconds out of order, ~0.1% duplicate
messageIds (SDK retries) and ~0.02% events that arrive minutes to hours late.

The same seed gives the same stream, byte for byte. `generate()` yields the events
as dicts for benchmarks; the dicts share some nested objects (library, device,
page), so treat them as read-only.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import io
import json
import math
import random
import sys
import time
from bisect import bisect
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import accumulate
from typing import IO, Any

__all__ = ["generate", "main"]

DEFAULT_START = "2026-03-01T00:00:00Z"
DEFAULT_DAYS = 14.0

# Stream imperfections, as fractions of all events.
DUPLICATE_RATE = 0.001  # an SDK retry resends the same payload
SHUFFLE_RATE = 0.01  # arrives 1-3 s after its event time instead of < 300 ms
VERY_LATE_RATE = 0.0002  # arrives minutes to hours late (an offline phone)

# fmt: off
_CATEGORIES = (
    "shoes", "jackets", "shirts", "bags", "watches", "headphones", "speakers",
    "vinyl", "books", "kitchen", "lamps", "plants",
)
_ADJECTIVES = (
    "Classic", "Urban", "Nordic", "Vintage", "Studio", "Trail", "Soft", "Bold",
    "Daily", "Coastal", "Midnight", "Golden",
)
_ARTISTS = (
    "The Lanterns", "Mira Solé", "Low Tide", "Kofi & The Owls", "Parallel Lines",
    "Aster", "Northbound", "Velvet Static", "June Harbor", "DJ Ketu",
)
_SEARCHES = (
    "running shoes", "rain jacket", "wireless headphones", "gift", "vinyl jazz",
    "leather bag", "desk lamp", "sale", "watch strap", "linen shirt",
)
_TIMEZONES = (
    "Europe/Berlin", "Europe/London", "Europe/Paris", "America/New_York",
    "America/Chicago", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Tokyo",
    "Asia/Singapore", "Australia/Sydney", "Africa/Lagos", "Asia/Kolkata",
)
_PLANS = ("free", "free", "free", "plus", "plus", "premium")
_LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "pt-BR", "ja-JP", "es-ES")
_FIRST = (
    "Ada", "Ben", "Chloe", "Dev", "Emma", "Felix", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rafael", "Sofia", "Tom",
)
_LAST = (
    "Adams", "Bauer", "Costa", "Dubois", "Eze", "Fischer", "Garcia", "Hansen",
    "Ito", "Jensen", "Khan", "Lopez", "Meyer", "Nakamura", "Okafor", "Silva",
)
_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
)
_WEB_LIBRARY = {"name": "analytics.js", "version": "next-1.76.0"}
_IOS = (
    {"name": "analytics-swift", "version": "1.7.2"},
    {"name": "iOS", "version": "18.1"},
    {"type": "ios", "manufacturer": "Apple", "model": "iPhone15,2"},
)
_ANDROID = (
    {"name": "analytics-kotlin", "version": "1.18.0"},
    {"name": "Android", "version": "14"},
    {"type": "android", "manufacturer": "Google", "model": "Pixel 8"},
)
_APP = {"name": "Shop", "version": "4.12.0", "build": "4120"}
_REFERRERS = (
    "", "", "", "https://www.google.com/", "https://www.instagram.com/",
    "https://newsletter.example.com/", "https://www.bing.com/",
)
_SITE = "https://shop.example.com"
# fmt: on


class _Product:
    __slots__ = ("category", "id", "name", "price", "sku")

    def __init__(self, rng: random.Random, i: int) -> None:
        self.id = f"prod_{i:05d}"
        self.sku = f"SKU-{rng.randrange(10**6):06d}"
        self.category = rng.choice(_CATEGORIES)
        self.name = f"{rng.choice(_ADJECTIVES)} {self.category[:-1].title()} {i % 97}"
        # Log-normal prices: median ~37, a long tail of expensive items.
        self.price = round(min(2500.0, max(2.0, math.exp(rng.gauss(3.6, 1.1)))), 2)


class _User:
    __slots__ = (
        "anon",
        "cart",
        "context",
        "email",
        "name",
        "plan",
        "platform",
        "registered",
        "traits",
        "tz",
        "user_id",
    )

    def __init__(self, rng: random.Random, i: int, anon: str) -> None:
        self.user_id = f"usr_{i:07d}"
        self.anon = anon
        # A third of users start as anonymous visitors who have never signed up.
        self.registered = rng.random() >= 0.35
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        self.name = f"{first} {last}"
        self.email = f"{first.lower()}.{last.lower()}{i}@example.com"
        self.plan = rng.choice(_PLANS)
        self.tz = rng.choice(_TIMEZONES)
        self.traits: dict[str, Any] | None = None
        self.cart: list[_Product] = []
        roll = rng.random()
        self.platform = "web" if roll < 0.6 else ("ios" if roll < 0.85 else "android")
        locale = rng.choice(_LOCALES)
        ip = f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if self.platform == "web":
            self.context = {
                "library": _WEB_LIBRARY,
                "userAgent": rng.choice(_USER_AGENT),
                "locale": locale,
                "ip": ip,
                "timezone": self.tz,
            }
        else:
            library, os_, device = _IOS if self.platform == "ios" else _ANDROID
            self.context = {
                "app": _APP,
                "library": library,
                "os": os_,
                "device": device,
                "locale": locale,
                "ip": ip,
                "timezone": self.tz,
            }


class _Stream:
    """The state of one generated stream; `events()` yields dicts in arrival order."""

    def __init__(self, n_events: int, n_users: int, seed: int, start_ms: int, days: float) -> None:
        if n_events < 0 or n_users < 1:
            raise ValueError("need n_events >= 0 and n_users >= 1")
        self.n_events = n_events
        self.n_users = n_users
        self.rng = rng = random.Random(seed)
        self.start_ms = start_ms
        self.span_ms = max(1.0, days * 86_400_000)
        n_products = max(200, min(20_000, n_users // 20))
        self.products = [_Product(rng, i) for i in range(n_products)]
        # Zipf-like popularity: a few best sellers, a long tail.
        self.product_cw = list(accumulate(1.0 / (r + 1) ** 1.07 for r in range(n_products)))
        # Per-user activity is log-normal: most users come once or twice, a few daily.
        self.user_cw = list(accumulate(math.exp(rng.gauss(0.0, 0.8)) for _ in range(n_users)))
        self.users: dict[int, _User] = {}
        self.n_songs = 5_000
        self._sec_cache: dict[int, str] = {}

    # --- small helpers -----------------------------------------------------------

    def _uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"

    def _stamp(self, ms: int) -> str:
        sec, milli = divmod(ms, 1000)
        head = self._sec_cache.get(sec)
        if head is None:
            if len(self._sec_cache) > 50_000:
                self._sec_cache.clear()
            head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._sec_cache[sec] = head
        return f"{head}.{milli:03d}Z"

    def _product(self) -> _Product:
        cw = self.product_cw
        return self.products[bisect(cw, self.rng.random() * cw[-1])]

    def _user(self) -> _User:
        cw = self.user_cw
        i = bisect(cw, self.rng.random() * cw[-1])
        user = self.users.get(i)
        if user is None:
            user = self.users[i] = _User(self.rng, i, self._uuid())
        return user

    # --- sessions ----------------------------------------------------------------

    def _session(self, user: _User, t: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """One visit: yields (event time ms, event) with event times increasing."""
        rng = self.rng
        web = user.platform == "web"
        # A registered user on a new device (or after clearing cookies) browses
        # anonymously under a new anonymousId until logging in, so their identify
        # links that id and merges what it gathered.
        if user.registered and user.traits is not None and rng.random() < 0.12:
            user.anon = self._uuid()
            logged_in = False
        else:
            logged_in = user.registered
        context = user.context
        prefix = "ajs-next-" if web else ""
        anon = user.anon
        referrer = rng.choice(_REFERRERS)

        def event(
            kind: str, name: str | None, props: dict[str, Any] | None, page: dict[str, Any] | None = None
        ) -> dict[str, Any]:
            ev: dict[str, Any] = {"type": kind}
            if name is not None:
                ev["event" if kind == "track" else "name"] = name
            if logged_in:
                ev["userId"] = user.user_id
            ev["anonymousId"] = anon
            ev["messageId"] = prefix + self._uuid()
            ev["timestamp"] = self._stamp(t)
            if props is not None:
                ev["properties"] = props
            if page is not None:
                ctx = dict(context)
                ctx["page"] = page
                ev["context"] = ctx
            else:
                ev["context"] = context
            return ev

        def view(name: str, path: str, title: str) -> dict[str, Any]:
            nonlocal referrer
            if web:
                page = {"path": path, "url": _SITE + path, "title": title, "referrer": referrer}
                referrer = _SITE + path
                return event("page", name, {"path": path, "url": _SITE + path, "title": title}, page)
            return event("screen", name, {"path": path})

        def identify() -> dict[str, Any]:
            nonlocal logged_in
            logged_in = True
            user.registered = True
            if user.traits is None:
                user.traits = {
                    "email": user.email,
                    "name": user.name,
                    "plan": user.plan,
                    "timezone": user.tz,
                    "created_at": self._stamp(t),
                }
            elif rng.random() < 0.05:
                user.plan = "premium" if user.plan != "free" else "plus"
                user.traits = {**user.traits, "plan": user.plan}
            return event("identify", None, None) | {"traits": user.traits}

        def gap(mean_s: float) -> int:
            return 400 + int(rng.expovariate(1.0 / (mean_s * 1000.0)))

        # A known user on their usual device is recognised: an identify opens the first
        # visit, and later ones now and then, as apps do on launch.
        if logged_in and (user.traits is None or rng.random() < 0.15):
            yield t, identify()
            t += gap(2)

        roll = rng.random()
        if roll < 0.25:
            # Music corner: a run of song previews; one in six is a binge.
            yield t, view("Music", "/music", "Listen")
            n = 1 + int(rng.expovariate(1 / 4.0))
            if rng.random() < 1 / 6:
                n += rng.randrange(8, 30)
            for position in range(n):
                t += gap(8)
                song = rng.randrange(self.n_songs)
                duration = rng.randrange(120, 330)
                yield (
                    t,
                    event(
                        "track",
                        "song_played",
                        {
                            "song_id": f"song_{song:05d}",
                            "artist": _ARTISTS[song % len(_ARTISTS)],
                            "title": f"Track {song}",
                            "duration_s": duration,
                            "position": position,
                        },
                    ),
                )
                # Most people skip after a while; a third listen to the end.
                t += int(duration * 1000 * (1.0 if rng.random() < 0.33 else rng.random()))
            return
        if roll < 0.30:
            # A bounce: one or two page views.
            yield t, view("Home", "/", "Shop")
            if rng.random() < 0.5:
                t += gap(20)
                cat = rng.choice(_CATEGORIES)
                yield t, view("Category", f"/c/{cat}", cat.title())
            return

        # Shopping visit.
        yield t, view("Home", "/", "Shop")
        if not logged_in and user.registered and rng.random() < 0.3:
            t += gap(10)
            yield t, identify()
        if rng.random() < 0.25:
            t += gap(15)
            yield t, event("track", "products_searched", {"query": rng.choice(_SEARCHES)})
        n_views = 1 + int(rng.expovariate(1 / 3.5))
        for _ in range(n_views):
            product = self._product()
            t += gap(25)
            if rng.random() < 0.4:
                yield t, view("Category", f"/c/{product.category}", product.category.title())
                t += gap(10)
            path = f"/p/{product.id}"
            yield t, view("Product", path, product.name)
            t += gap(2)
            yield (
                t,
                event(
                    "track",
                    "product_viewed",
                    {
                        "product_id": product.id,
                        "sku": product.sku,
                        "name": product.name,
                        "category": product.category,
                        "price": product.price,
                        "currency": "EUR",
                    },
                ),
            )
            if rng.random() < 0.22:
                t += gap(20)
                quantity = 1 if rng.random() < 0.85 else rng.randrange(2, 4)
                user.cart.append(product)
                yield (
                    t,
                    event(
                        "track",
                        "add_to_cart",
                        {
                            "product_id": product.id,
                            "sku": product.sku,
                            "name": product.name,
                            "price": product.price,
                            "quantity": quantity,
                            "currency": "EUR",
                            "cart_id": f"cart_{user.user_id}",
                        },
                    ),
                )
        if user.cart and rng.random() < 0.06:
            t += gap(10)
            gone = user.cart.pop(rng.randrange(len(user.cart)))
            yield t, event("track", "remove_from_cart", {"product_id": gone.id})
        if not user.cart or rng.random() >= 0.38:
            return

        # Checkout: most shoppers log in or sign up first; some check out as guests.
        t += gap(20)
        yield t, view("Cart", "/cart", "Your cart")
        if not logged_in and rng.random() < 0.85:
            t += gap(30)
            yield t, identify()
        t += gap(45)
        yield t, view("Checkout", "/checkout", "Checkout")
        t += gap(60)
        if len(user.cart) > 1 and rng.random() < 0.2:
            # "Buy now" of one item: the purchase names its product_id, so only that
            # item's window closes; the rest of the cart stays.
            bought = [user.cart.pop(rng.randrange(len(user.cart)))]
        else:
            bought, user.cart = user.cart, []
        items = [{"product_id": p.id, "sku": p.sku, "name": p.name, "price": p.price, "quantity": 1} for p in bought]
        total = round(sum(p.price for p in bought), 2)
        props: dict[str, Any] = {
            "order_id": f"ord_{rng.getrandbits(40):010x}",
            "total": total,
            "revenue": round(total / 1.19, 2),
            "tax": round(total - total / 1.19, 2),
            "currency": "EUR",
            "products": items,
        }
        if len(bought) == 1:
            props["product_id"] = bought[0].id
        yield t, event("track", "purchase", props)

    # --- the stream --------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        n_events = self.n_events
        if n_events == 0:
            return
        # Session starts are a Poisson process with a daily rhythm (thinned from the
        # peak rate); the rate is set so the stream spans about `days`.
        expected_sessions = n_events / 12.5
        peak_rate = 1.6 * expected_sessions / self.span_ms  # sessions per ms at peak
        next_start = float(self.start_ms)

        def next_session_time(now: float) -> float:
            while True:
                now += rng.expovariate(peak_rate)
                hour = (now / 3_600_000.0) % 24.0
                if rng.random() * 1.6 < 1.0 + 0.6 * math.sin((hour - 9.0) * math.pi / 12.0):
                    return now

        next_start = next_session_time(next_start)
        active: list[tuple[int, int, dict[str, Any], Iterator[tuple[int, dict[str, Any]]], _User]] = []
        pending: list[tuple[int, int, dict[str, Any]]] = []  # arrival-order buffer
        heappush, heappop = heapq.heappush, heapq.heappop
        produced = 0
        seq = 0
        random_ = rng.random
        follow_ups: list[tuple[int, int, _User]] = []

        while produced < n_events:
            # Start every session due before the next event of an active one.
            horizon = active[0][0] if active else math.inf
            while next_start <= horizon or (follow_ups and follow_ups[0][0] <= horizon):
                if follow_ups and follow_ups[0][0] <= next_start:
                    start, _, user = heappop(follow_ups)
                else:
                    start = int(next_start)
                    user = self._user()
                    next_start = next_session_time(next_start)
                session = self._session(user, start)
                first = next(session, None)
                if first is not None:
                    seq += 1
                    heappush(active, (first[0], seq, first[1], session, user))
                horizon = active[0][0]
            t, _, ev, session, user = heappop(active)
            following = next(session, None)
            if following is not None:
                seq += 1
                heappush(active, (following[0], seq, following[1], session, user))
            elif user.cart and random_() < 0.33:
                # A visit that ended with items in the cart: one shopper in three comes
                # back, most within a day.
                seq += 1
                back = t + 600_000 + int(rng.expovariate(1 / 21_600_000))
                heappush(follow_ups, (back, seq, user))

            # Arrival: event time plus transport delay.
            roll = random_()
            if roll < VERY_LATE_RATE:
                delay = rng.randrange(60_000, 6 * 3_600_000)
            elif roll < VERY_LATE_RATE + SHUFFLE_RATE:
                delay = rng.randrange(1_000, 3_000)
            else:
                delay = int(random_() * 300)
            seq += 1
            heappush(pending, (t + delay, seq, ev))
            produced += 1
            if produced < n_events and random_() < DUPLICATE_RATE:
                seq += 1
                heappush(pending, (t + delay + rng.randrange(20, 2_500), seq, dict(ev)))
                produced += 1
            # Everything that arrives before this event time is final in order.
            while pending and pending[0][0] <= t:
                yield heappop(pending)[2]
        while pending:
            yield heappop(pending)[2]


def generate(
    n_events: int, n_users: int, seed: int = 1, *, start: str = DEFAULT_START, days: float = DEFAULT_DAYS
) -> Iterator[dict[str, Any]]:
    """Yield `n_events` shop events for about `n_users` users, in arrival order.

    Deterministic for a given seed. `start` is the ISO-8601 time of the first
    session; the stream spans about `days` days of event time.
    """
    moment = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    start_ms = int(moment.timestamp() * 1000)
    return _Stream(n_events, n_users, seed, start_ms, days).events()


def _open_out(path: str) -> IO[str]:
    if path == "-":
        return sys.stdout
    if path.endswith(".jsonl.gz"):
        raw = open(path, "wb")  # noqa: SIM115  # closed through the wrapper
        # mtime=0 and no file name in the header keep the output byte-for-byte stable.
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=3, mtime=0)
        return io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
    if path.endswith(".jsonl"):
        return open(path, "w", encoding="utf-8", newline="\n")
    raise SystemExit(f"--out: {path!r} must be '-' or end with .jsonl or .jsonl.gz")


def write(events: Iterator[dict[str, Any]], out: IO[str], total: int, progress: bool) -> int:
    """Write `events` as JSON lines to `out`; returns how many were written."""
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    chunk: list[str] = []
    written = 0
    bar = _progress(total) if progress else None
    try:
        for ev in events:
            chunk.append(encode(ev))
            if len(chunk) == 10_000:
                out.write("\n".join(chunk) + "\n")
                written += len(chunk)
                chunk.clear()
                if bar is not None:
                    bar[0].update(bar[1], completed=written)
        if chunk:
            out.write("\n".join(chunk) + "\n")
            written += len(chunk)
        if bar is not None:
            bar[0].update(bar[1], completed=written)
    finally:
        if bar is not None:
            bar[0].stop()
    return written


def _progress(total: int) -> tuple[Any, Any] | None:
    try:
        from rich.console import Console  # noqa: PLC0415  # optional dependency
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeRemainingColumn,
        )
    except ImportError:
        return None
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("events", total=total)
    progress.start()
    return progress, task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a realistic shop event stream (Segment JSON lines).",
        epilog="example: python examples/shop/generate.py --events 100000 --users 10000 --seed 1 --out shop.jsonl.gz",
    )
    parser.add_argument("--events", type=int, default=10_000, help="events to write")
    parser.add_argument("--users", type=int, default=1_000, help="size of the user base")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", default="-", help="'-' for stdout, or a path ending in .jsonl or .jsonl.gz")
    parser.add_argument(
        "--start", default=DEFAULT_START, help=f"event time of the first session (default {DEFAULT_START})"
    )
    parser.add_argument(
        "--days",
        type=float,
        default=DEFAULT_DAYS,
        help=f"about how many days of event time to span (default {DEFAULT_DAYS:g})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.events < 0 or args.users < 1:
        parser.error("--events must be >= 0 and --users >= 1")
    out = _open_out(args.out)
    began = time.perf_counter()
    try:
        events = generate(args.events, args.users, args.seed, start=args.start, days=args.days)
        show = not args.quiet and args.events >= 200_000 and sys.stderr.isatty()
        written = write(events, out, args.events, show)
    finally:
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()
    if not args.quiet and args.out != "-":
        elapsed = time.perf_counter() - began
        print(f"wrote {written:,} events to {args.out} in {elapsed:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
