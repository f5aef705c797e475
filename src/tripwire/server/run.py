"""`tripwire serve`: credentials, logging, the service and the HTTP server, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog
import uvicorn

from tripwire.actions.dispatcher import Dispatcher
from tripwire.actions.goals import sweep as goal_sweep
from tripwire.actions.in_app import Inbox
from tripwire.actions.registry import make_channel
from tripwire.engine import Fire
from tripwire.server.app import create_app
from tripwire.server.auth import Secret
from tripwire.server.inbox import inbox_routes, load_inbox_secret
from tripwire.server.logs import PROCESSORS
from tripwire.server.metrics import Metrics
from tripwire.server.service import Service
from tripwire.store import SqliteOutbox
from tripwire.store.goals import SqliteGoals
from tripwire.store.inbox import SqliteInbox

CREDENTIALS_FILE = "credentials.json"
GOAL_SWEEP_SECONDS = 5.0


@dataclass
class Credentials:
    write_keys: list[Secret]
    admin_token: Secret
    # what to tell the operator once, at start: (label, value or None, where it comes from)
    notes: list[tuple[str, str | None, str]]


def load_credentials(data_dir: Path, environ: dict[str, str] | None = None) -> Credentials:
    """Write keys and admin token: from TRIPWIRE_WRITE_KEYS / TRIPWIRE_ADMIN_TOKEN, else
    from the data folder, else made now and saved there (readable by the owner only)."""
    env = os.environ if environ is None else environ
    path = data_dir / CREDENTIALS_FILE
    saved: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    notes: list[tuple[str, str | None, str]] = []
    changed = False

    keys_text = env.get("TRIPWIRE_WRITE_KEYS", "").strip()
    if keys_text:
        keys = [k.strip() for k in keys_text.split(",") if k.strip()]
        notes.append(("write keys", None, "from TRIPWIRE_WRITE_KEYS"))
    elif isinstance(saved_keys := saved.get("write_keys"), list) and saved_keys:
        keys = [str(k) for k in saved_keys]
        notes.append(("write keys", None, f"saved in {path}"))
    else:
        keys = [secrets.token_urlsafe(24)]
        saved["write_keys"] = keys
        changed = True
        notes.append(("write key", keys[0], f"new, saved in {path}"))

    token = env.get("TRIPWIRE_ADMIN_TOKEN", "").strip()
    if token:
        notes.append(("admin token", None, "from TRIPWIRE_ADMIN_TOKEN"))
    elif isinstance(saved.get("admin_token"), str) and saved["admin_token"]:
        token = str(saved["admin_token"])
        notes.append(("admin token", None, f"saved in {path}"))
    else:
        token = secrets.token_urlsafe(32)
        saved["admin_token"] = token
        changed = True
        notes.append(("admin token", token, f"new, saved in {path}"))

    if changed:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(saved, handle, indent=2)
        tmp.replace(path)
    return Credentials([Secret(k) for k in keys], Secret(token), notes)


class _Server(uvicorn.Server):
    """uvicorn, except that a SIGTERM or SIGINT ends `serve()` instead of the process.

    uvicorn raises the captured signal again once it has shut down, which would kill
    the process before the service drains its queue and commits. `on_exit` runs when the
    shutdown starts (closing the inbox's open streams, which would hold it up).
    """

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def configure_logging(level: str = "info") -> None:
    """One JSON object a line on stderr, for tripwire and for uvicorn's own messages."""
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=list(PROCESSORS),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('{"level": "%(levelname)s", "logger": "%(name)s", "event": "%(message)s"}'))
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(numeric)
        logger.propagate = False


async def serve(rules: Path, data_dir: Path, host: str, port: int, *, log_level: str = "info") -> None:
    """Run until SIGINT or SIGTERM; then stop taking traffic, finish deliveries in flight,
    drain the ingest queue, commit and exit."""
    credentials = load_credentials(data_dir)
    inbox_secret, note = load_inbox_secret(data_dir)
    credentials.notes.append(note)
    service = Service(rules, data_dir)
    await service.start()  # opens the store and applies migrations first
    metrics = Metrics()
    service.listeners.append(metrics.on_fires)
    outbox, goals = SqliteOutbox(data_dir), SqliteGoals(data_dir)
    inbox = Inbox(SqliteInbox(data_dir))
    dispatcher = Dispatcher(service.store, outbox, lambda: service.rules, functools.partial(make_channel, inbox=inbox))
    dispatcher.listeners.append(metrics.on_delivery)
    loop = asyncio.get_running_loop()

    def wake_dispatcher(_fires: list[Fire]) -> None:  # runs in the writer thread, after the commit
        loop.call_soon_threadsafe(dispatcher.wake)

    service.listeners.append(wake_dispatcher)
    app = create_app(
        service,
        write_keys=credentials.write_keys,
        admin_token=credentials.admin_token,
        metrics=metrics,
        delivery=(outbox, goals),
        extra_routes=inbox_routes(inbox, write_keys=credentials.write_keys, secret=inbox_secret),
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=10
    )
    server = _Server(config, on_exit=inbox.feed.close)
    print(f"tripwire: {len(service.rules.triggers)} triggers from {rules}, data in {data_dir}", flush=True)
    print(f"tripwire: Segment endpoint http://{host}:{port}/v1/batch, admin API http://{host}:{port}/api", flush=True)
    for label, value, source in credentials.notes:
        shown = f"{value} ({source})" if value is not None else f"({source})"
        print(f"tripwire: {label}: {shown}", flush=True)
    sending = asyncio.create_task(dispatcher.run(), name="dispatcher")
    housekeeping = asyncio.create_task(_housekeeping(service, goals, inbox), name="housekeeping")
    try:
        await server.serve()
    finally:
        housekeeping.cancel()
        dispatcher.stop()
        await asyncio.gather(sending, housekeeping, return_exceptions=True)
        await service.stop()


async def _housekeeping(service: Service, goals: SqliteGoals, inbox: Inbox) -> None:
    """Record goal conversions every few seconds; drop expired inbox messages every hour."""
    log = structlog.get_logger("tripwire.housekeeping")
    rounds = 0
    while True:
        await asyncio.sleep(GOAL_SWEEP_SECONDS)
        try:
            found = await asyncio.to_thread(goal_sweep, goals, service.rules, service.now_ms())
            if found:
                log.info("conversions recorded", count=found)
            rounds += 1
            if rounds % 720 == 0:
                await inbox.purge()
        except Exception:
            log.exception("housekeeping failed; trying again next round")


def run(rules: Path, data_dir: Path, host: str, port: int, log_level: str) -> None:
    configure_logging(log_level)
    gc.set_threshold(100_000, 50, 100)
    asyncio.run(serve(rules, data_dir, host, port, log_level=log_level))
