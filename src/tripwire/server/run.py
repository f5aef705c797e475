"""`tripwire serve`: credentials, logging, the service and the HTTP server, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn

from tripwire.actions.dispatcher import Dispatcher
from tripwire.actions.goals import sweep as goal_sweep
from tripwire.actions.in_app import Inbox
from tripwire.actions.registry import make_channel
from tripwire.engine import Fire
from tripwire.errors import RulesError
from tripwire.server.app import create_app
from tripwire.server.connections import ConnectionLimits, fit_to_fd_limit, guarded_protocol
from tripwire.server.credentials import load_credentials
from tripwire.server.inbox import inbox_routes
from tripwire.server.logs import PROCESSORS, RedactingFormatter
from tripwire.server.metrics import Metrics
from tripwire.server.service import Service
from tripwire.store import DeliveryRow, Goals, Store, Stores, open_stores

if TYPE_CHECKING:
    from tripwire.cluster.ingest import ClusterService
    from tripwire.config import ClusterConfig

GOAL_SWEEP_SECONDS = 5.0


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
    handler.setFormatter(RedactingFormatter('{"level": "%(levelname)s", "logger": "%(name)s", "event": "%(message)s"}'))
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(numeric)
        logger.propagate = False


async def serve(
    rules: Path,
    data_dir: Path,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    limits: ConnectionLimits | None = None,
    cluster: ClusterConfig | None = None,
) -> None:
    """Run until SIGINT or SIGTERM; then stop taking traffic, finish deliveries in flight,
    drain the ingest queue, commit and exit.

    With `cluster`, an ingest node: events go to the Kafka topic, reads and deliveries to
    PostgreSQL (docs/cluster.md); otherwise the single node on SQLite in `data_dir`."""
    limits = fit_to_fd_limit(limits or ConnectionLimits())
    credentials = load_credentials(data_dir)
    service: Service | ClusterService
    if cluster is None:
        stores = open_stores(data_dir)
        service = Service(rules, data_dir, store=stores.store, outbox=stores.outbox)
        where = f"data in {data_dir}"
    else:
        from tripwire.cluster.ingest import ClusterService  # noqa: PLC0415  # Kafka's client only when asked for

        stores = await asyncio.to_thread(open_stores, cluster.postgres, schema=cluster.schema)
        service = ClusterService(rules, stores, bootstrap=cluster.kafka, topic=cluster.topic)
        where = f"events to Kafka topic {cluster.topic}, state in PostgreSQL schema {cluster.schema}"
    await service.start()  # opens the store and applies migrations first
    metrics = Metrics()
    service.listeners.append(metrics.on_fires)
    outbox, goals = stores.outbox, stores.goals
    inbox = Inbox(stores.inbox)
    dispatcher = Dispatcher(
        service.store, outbox, lambda: service.rules, functools.partial(make_channel, inbox=inbox),
        # several nodes share a cluster's outbox: a lease held by another is not this one's to release
        release_at_start=cluster is None,
        # a cluster's user lives in the partition that fired (one pool serves them all)
        log_of=None if cluster is None else _partition_logs(stores),
    )  # fmt: skip
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
        extra_routes=inbox_routes(inbox, write_keys=credentials.write_keys, secret=credentials.inbox_secret),
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, math.ceil(limits.keep_alive_timeout)),  # uvicorn takes whole seconds
    )
    server = _Server(config, on_exit=inbox.feed.close)
    print(f"tripwire: {len(service.rules.triggers)} triggers from {rules}, {where}", flush=True)
    print(f"tripwire: Segment endpoint http://{host}:{port}/v1/batch, admin API http://{host}:{port}/api", flush=True)
    # A credential just made is shown once, and only to a person at a terminal: when stdout
    # is a file or a pipe it ends up in logs that outlive it; the data folder keeps it.
    show = sys.stdout.isatty()
    for label, value, source in credentials.notes:
        shown = f"{value} ({source})" if value is not None and show else f"({source})"
        print(f"tripwire: {label}: {shown}", flush=True)
    sending = asyncio.create_task(dispatcher.run(), name="dispatcher")
    housekeeping = asyncio.create_task(_housekeeping(service, goals, inbox), name="housekeeping")
    reloads: set[asyncio.Task[None]] = set()
    if threading.current_thread() is threading.main_thread():  # SIGHUP: as POST /api/rules/reload
        loop.add_signal_handler(signal.SIGHUP, lambda: _spawn(reloads, _reload_on_signal(service, rules)))
    try:
        await server.serve()
    finally:
        if threading.current_thread() is threading.main_thread():
            loop.remove_signal_handler(signal.SIGHUP)
        housekeeping.cancel()
        dispatcher.stop()
        await asyncio.gather(sending, housekeeping, return_exceptions=True)
        await service.stop()
        stores.close()


def _spawn(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    tasks.add(task)  # held until done: the loop keeps only a weak reference
    task.add_done_callback(tasks.discard)


async def _reload_on_signal(service: Service | ClusterService, path: Path) -> None:
    """The service logs the reload; a refused file is logged here (an HTTP reload answers 422)."""
    try:
        await service.reload_rules()
    except RulesError as exc:
        structlog.get_logger("tripwire.rules").error(
            "rules reload refused; the running rules stay", file=str(path), problems=[str(p) for p in exc.problems]
        )


def _partition_logs(stores: Stores) -> Callable[[DeliveryRow], Store]:
    """The log of each delivery's partition, one store object a partition."""
    logs: dict[int | None, Store] = {}

    def log_of(row: DeliveryRow) -> Store:
        found = logs.get(row.partition)
        if found is None:
            found = logs[row.partition] = stores.partition(row.partition)
        return found

    return log_of


async def _housekeeping(service: Service | ClusterService, goals: Goals, inbox: Inbox) -> None:
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


def run(
    rules: Path,
    data_dir: Path,
    host: str,
    port: int,
    log_level: str,
    limits: ConnectionLimits,
    cluster: ClusterConfig | None = None,
) -> None:
    configure_logging(log_level)
    gc.set_threshold(100_000, 50, 100)
    asyncio.run(serve(rules, data_dir, host, port, log_level=log_level, limits=limits, cluster=cluster))
