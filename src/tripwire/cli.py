"""The `tripwire` command line."""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tripwire import __version__
from tripwire.durations import format_duration, parse_duration
from tripwire.engine import Fire
from tripwire.errors import DurationError, RulesError, TripwireError
from tripwire.redact import redact_text, redact_url
from tripwire.replay import Replayer, ReplayStats, open_events, parse_until, replay_store
from tripwire.rules import Rules, Trigger, parse_rules
from tripwire.rules.source import read_rules_file
from tripwire.timestamps import format_ms

if TYPE_CHECKING:
    from tripwire.store import FireRow, Outbox

PROGRESS_MIN_BYTES = 1_000_000
_encode_line = msgspec.json.Encoder().encode


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _load(path: str) -> Rules:
    try:
        return parse_rules(read_rules_file(path), path)
    except RulesError as exc:
        console = _err()
        console.print(f"[bold red]{path}: {len(exc.problems)} problem(s)[/]")
        for problem in exc.problems:
            console.print(f"  {problem}", markup=False, soft_wrap=True)
        raise SystemExit(2) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tripwire")
def main() -> None:
    """tripwire: real-time behavioral triggers over Segment-format events."""


def _shape(trigger: Trigger) -> str:
    if trigger.shape == "inactivity":
        of = f" of {trigger.of.text}" if trigger.of else ""
        return f"no activity{of} for {format_duration(trigger.inactive)}"
    assert trigger.when is not None
    if trigger.shape == "absence":
        assert trigger.unless is not None and trigger.within is not None
        text = f"{trigger.when.text}, then no {trigger.unless.text} within {format_duration(trigger.within)}"
        return text + (" (restarts)" if trigger.restart else "")
    if trigger.count == 1 and trigger.within is None:
        return f"on {trigger.when.text}"
    window = f" within {format_duration(trigger.within)}" if trigger.within is not None else " (all time)"
    return f"{trigger.count} x {trigger.when.text}{window}"


@main.command()
@click.argument("rules", type=click.Path(dir_okay=False))
def check(rules: str) -> None:
    """Validate RULES and print a summary of its triggers.

    Every problem is listed at once, with its file, line, trigger and field.
    Exits 2 when the file is invalid.

    Example: tripwire check examples/shop/rules.yaml
    """
    loaded = _load(rules)
    console = Console(highlight=False)
    console.print(f"{rules}: {len(loaded.triggers)} triggers", markup=False, soft_wrap=True)
    table = Table()
    for column in ("trigger", "shape", "holds when", "key", "cooldown", "guards", "actions"):
        table.add_column(column)
    for trigger in loaded.triggers:
        delivery = ", ".join(trigger.actions)
        if trigger.holdout:
            delivery += f" (holdout {trigger.holdout:.0%})"
        cells = (
            trigger.id,
            trigger.shape,
            _shape(trigger),
            trigger.key or "",
            format_duration(trigger.cooldown) if trigger.cooldown else "",
            "; ".join(guard.text for guard in trigger.guards),
            delivery,
        )
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    if loaded.actions:
        actions = Table()
        for column in ("action", "type", "to", "limits"):
            actions.add_column(column, overflow="fold")
        for action in loaded.actions.values():
            if action.type == "in_app":
                target = "the in-app inbox"
            else:
                target = redact_url(action.options["url"]) if "url" in action.options else ""
                target = target or action.options.get("smtp", {}).get("host") or ""
            limits = f"{action.max_attempts} attempts, timeout {format_duration(action.timeout)}"
            if action.rate_limit:
                limits += f", {action.rate_limit[0]} per {format_duration(action.rate_limit[1])}"
            actions.add_row(*(escape(str(cell)) for cell in (action.id, action.type, target, limits)))
        console.print(actions)
    settings = loaded.settings
    console.print(
        f"allowed lateness {format_duration(settings.allowed_lateness)}, "
        f"messageIds remembered {format_duration(settings.dedup_window)}"
    )
    for cap in settings.frequency_caps:
        scope = f" on {cap.channel}" if cap.channel else ""
        console.print(f"frequency cap: {cap.max} per user per {format_duration(cap.per)}{scope}")
    if settings.quiet_hours is not None:
        quiet = settings.quiet_hours
        console.print(
            f"quiet hours: {quiet.start // 60:02d}:{quiet.start % 60:02d} to {quiet.end // 60:02d}:{quiet.end % 60:02d}"
            f" local time, for {', '.join(sorted(quiet.channels))}"
        )


@main.command()
@click.argument("rules", type=click.Path(dir_okay=False))
@click.argument("events", type=str, required=False)
@click.option("--until", metavar="ISO", help="End of the replay: fire timers due by this time too.")
@click.option("--out", "out_path", metavar="FILE", help="Write fires here instead of stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--postgres", metavar="DSN", help="Replay a cluster's logs (one per partition) instead of EVENTS.")
@click.option("--kafka", metavar="BOOTSTRAP", help="With --postgres: the broker. [env TRIPWIRE_KAFKA]")
@click.option("--topic", help="With --postgres: the topic. [env TRIPWIRE_TOPIC; rules settings.topic]")
@click.option("--schema", help="With --postgres: the schema. [env TRIPWIRE_SCHEMA; tripwire]")
def replay(
    rules: str,
    events: str | None,
    until: str | None,
    out_path: str | None,
    quiet: bool,
    postgres: str | None,
    kafka: str | None,
    topic: str | None,
    schema: str | None,
) -> None:
    """Run EVENTS through RULES and write every fire as one JSON object a line.

    EVENTS is JSONL in arrival order: a .jsonl or .jsonl.gz file, or - for stdin.
    It may also be a server's data folder: its log is replayed with the acceptance
    the server recorded, up to the server's watermark, giving the fires it gave.
    With --postgres (and the topic's broker and name), each partition's log of a cluster
    is replayed the same way, giving the cluster's fires.
    Suppressed fires are written too, with their reason. A summary goes to stderr.

    Example: tripwire replay examples/shop/rules.yaml events.jsonl.gz --out fires.jsonl
    """
    loaded = _load(rules)
    if (events is None) == (postgres is None):
        raise click.UsageError("give EVENTS (a JSONL file, -, a data folder) or --postgres, one of them")
    # The engine keeps many small long-lived objects and makes no reference cycles, so
    # reference counting frees all it drops; the cycle collector would only walk the live
    # state again and again (a third of the run time with 100,000 users).
    gc.freeze()
    gc.disable()
    try:
        until_ms = parse_until(until)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None
    if events is None:
        flags = {"kafka": kafka, "topic": topic, "postgres": postgres, "schema": schema}
        _replay_cluster(loaded, flags, until_ms, out_path, quiet)
        return
    if events != "-" and Path(events).is_dir():
        _replay_store(loaded, Path(events), until_ms, out_path, quiet)
        return
    if events != "-" and not Path(events).is_file():
        raise click.BadParameter(f"{events}: no such file", param_hint="EVENTS")
    console = _err()
    with ExitStack() as stack:
        out: IO[bytes] = stack.enter_context(Path(out_path).open("wb")) if out_path else sys.stdout.buffer
        replayer = Replayer(loaded, _writer(out))
        lines, raw = stack.enter_context(open_events(events))
        size = os.fstat(raw.fileno()).st_size if events != "-" else 0
        show = not quiet and console.is_terminal and (events == "-" or size >= PROGRESS_MIN_BYTES)
        with _progress(console, show) as progress:
            task = progress.add_task("replay", total=size or None)
            for number, line in enumerate(lines, start=1):
                replayer.add_line(line, number)
                if number % 20_000 == 0 and show:
                    progress.update(task, completed=raw.tell() if size else number)
        stats = replayer.finish(until_ms)
        out.flush()
    if not quiet:
        _summary(console, stats, loaded)


def _writer(out: IO[bytes]) -> Callable[[Fire], None]:
    write = out.write

    def emit(fire: Fire) -> None:
        write(_encode_line(fire.to_dict()) + b"\n")

    return emit


def _progress(console: Console, show: bool) -> Progress:
    return Progress(
        TextColumn("replaying"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    )


def _replay_store(rules: Rules, data_dir: Path, until_ms: int | None, out_path: str | None, quiet: bool) -> None:
    from tripwire.store import SqliteStore

    if not (data_dir / "tripwire.db").exists():
        raise click.BadParameter(f"{data_dir} is a folder but holds no tripwire store", param_hint="EVENTS")
    store = SqliteStore(data_dir)
    with ExitStack() as stack:
        out: IO[bytes] = stack.enter_context(Path(out_path).open("wb")) if out_path else sys.stdout.buffer
        replayer = Replayer(rules, _writer(out))
        stats = replay_store(replayer, store, until_ms)
        out.flush()
    if not quiet:
        _summary(_err(), stats, rules)


def _replay_cluster(
    rules: Rules, flags: dict[str, str | None], until_ms: int | None, out_path: str | None, quiet: bool
) -> None:
    """Each partition's log, replayed as the worker recorded it; the fires of all of them."""
    from confluent_kafka.admin import AdminClient

    from tripwire.config import ConfigError, cluster_config
    from tripwire.store import open_stores

    try:
        config = cluster_config(flags, rules)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    found = AdminClient({"bootstrap.servers": config.kafka}).list_topics(topic=config.topic, timeout=15)
    described = found.topics.get(config.topic)
    if described is None or described.error is not None or not described.partitions:
        raise click.BadParameter(f"no topic {config.topic} on {config.kafka}", param_hint="--topic")
    try:
        stores = open_stores(config.postgres, schema=config.schema)
    except (ValueError, TripwireError) as exc:
        raise click.BadParameter(str(exc), param_hint="--postgres") from None
    total = ReplayStats()
    with ExitStack() as stack:
        stack.callback(stores.close)
        out: IO[bytes] = stack.enter_context(Path(out_path).open("wb")) if out_path else sys.stdout.buffer
        for partition in sorted(described.partitions):
            stats = replay_store(Replayer(rules, _writer(out)), stores.partition(partition), until_ms)
            total = _added(total, stats)
        out.flush()
    if not quiet:
        _summary(_err(), total, rules)


def _added(total: ReplayStats, more: ReplayStats) -> ReplayStats:
    """The stats of two replays as one."""
    names = ("read", "accepted", "late", "duplicate", "quarantined", "timers_quarantined", "bad")
    counts = {name: getattr(total, name) + getattr(more, name) for name in names}
    summed = ReplayStats(**counts)
    for name in ("fires", "decided", "suppressed"):
        getattr(summed, name).update(getattr(total, name))
        getattr(summed, name).update(getattr(more, name))
    summed.bad_events = [*total.bad_events, *more.bad_events]
    return summed


def _summary(console: Console, stats: ReplayStats, rules: Rules) -> None:
    for bad in stats.bad_events[:20]:
        console.print(f"[yellow]bad event[/] {escape(str(bad))}", soft_wrap=True)
    if stats.bad > 20:
        console.print(f"[yellow]… and {stats.bad - 20} more bad events[/]")
    events = Table(title="events", title_justify="left")
    for column in ("read", "accepted", "late", "duplicate", "bad"):
        events.add_column(column, justify="right")
    events.add_row(*(f"{n:,}" for n in (stats.read, stats.accepted, stats.late, stats.duplicate, stats.bad)))
    console.print(events)
    if stats.quarantined or stats.timers_quarantined:  # a log replay skips what the server quarantined
        console.print(
            f"quarantined by the server: {stats.quarantined:,} events, {stats.timers_quarantined:,} users' timers"
        )
    fires = Table(title="fires", title_justify="left")
    fires.add_column("trigger")
    fires.add_column("fired", justify="right")
    fires.add_column("suppressed", justify="right")
    for trigger in rules.triggers:
        fires.add_row(trigger.id, f"{stats.fires[trigger.id]:,}", f"{stats.suppressed[trigger.id]:,}")
    console.print(fires)


class _Seconds(click.ParamType[float]):
    """A duration flag (500ms, 10s, 2m) given to the server in seconds."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            ms = parse_duration(value)
        except DurationError as exc:
            self.fail(str(exc), param, ctx)
        if ms <= 0:
            self.fail("must be longer than zero", param, ctx)
        return ms / 1000


def _limit_option(name: str, default: str, text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    variable = "TRIPWIRE_" + name.upper().replace("-", "_")
    return click.option(f"--{name}", default=default, show_default=True, type=_Seconds(), envvar=variable,
                        show_envvar=True, help=text)  # fmt: skip


@main.command()
@click.option("--rules", "rules_path", required=True, type=click.Path(dir_okay=False), help="The rules file.")
@click.option("--data", "data_dir", default="./tripwire-data", show_default=True, help="Where the store lives.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True, type=int)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
@_limit_option("header-timeout", "10s", "Close a connection whose request line and headers take longer.")
@_limit_option("body-timeout", "30s", "Close a connection whose request body takes longer, once its headers are in.")
@_limit_option("keep-alive-timeout", "5s", "Close a connection idle this long between requests.")
@click.option("--max-connections", default=1000, show_default=True, type=click.IntRange(1, 1_000_000),
              envvar="TRIPWIRE_MAX_CONNECTIONS", show_envvar=True,
              help="Open connections at most; past it the oldest idle or half-open one is closed.")  # fmt: skip
@click.option("--cluster", is_flag=True, help="An ingest node: events to Kafka, reads and deliveries from PostgreSQL.")
@click.option("--kafka", metavar="BOOTSTRAP", help="With --cluster: Kafka bootstrap servers. [env TRIPWIRE_KAFKA]")
@click.option("--topic", help="With --cluster: the events' topic. [env TRIPWIRE_TOPIC; rules settings.topic]")
@click.option("--postgres", metavar="DSN", help="With --cluster: PostgreSQL. [env TRIPWIRE_POSTGRES]")
@click.option("--schema", help="With --cluster: the PostgreSQL schema. [env TRIPWIRE_SCHEMA; tripwire]")
def serve(
    rules_path: str,
    data_dir: str,
    host: str,
    port: int,
    log_level: str,
    header_timeout: float,
    body_timeout: float,
    keep_alive_timeout: float,
    max_connections: int,
    cluster: bool,
    kafka: str | None,
    topic: str | None,
    postgres: str | None,
    schema: str | None,
) -> None:
    """Take events over the Segment HTTP API and fire triggers in real time.

    Write keys come from TRIPWIRE_WRITE_KEYS (comma-separated) and the admin token from
    TRIPWIRE_ADMIN_TOKEN; when unset, they are made and saved in the data folder (and
    shown once when the output is a terminal).
    Stops cleanly on SIGTERM or Ctrl-C: no acknowledged event is lost.

    Example: tripwire serve --rules examples/shop/rules.yaml --max-connections 4000
    """
    from tripwire.config import ConfigError, cluster_config
    from tripwire.server.connections import ConnectionLimits
    from tripwire.server.run import run

    rules = _load(rules_path)
    flags = {"kafka": kafka, "topic": topic, "postgres": postgres, "schema": schema}
    if not cluster and any(flags.values()):
        raise click.UsageError("--kafka, --topic, --postgres and --schema go with --cluster")
    try:
        config = cluster_config(flags, rules) if cluster else None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    limits = ConnectionLimits(
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_connections=max_connections,
    )
    run(Path(rules_path), Path(data_dir), host, port, log_level, limits, config)


@main.command()
@click.option("--rules", "rules_path", required=True, type=click.Path(dir_okay=False), help="The rules file.")
@click.option(
    "--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers, host:port[,host:port]. [env TRIPWIRE_KAFKA]"
)
@click.option("--topic", help="The topic of the events. [env TRIPWIRE_TOPIC; rules settings.topic; tripwire-events]")
@click.option("--postgres", metavar="DSN", help="PostgreSQL, postgresql://user@host:port/db. [env TRIPWIRE_POSTGRES]")
@click.option("--group", help="The consumer group of the workers. [env TRIPWIRE_GROUP; rules settings.group; tripwire]")
@click.option("--schema", help="The PostgreSQL schema of tripwire's tables. [env TRIPWIRE_SCHEMA; tripwire]")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning"]))
def worker(
    rules_path: str,
    kafka: str | None,
    topic: str | None,
    postgres: str | None,
    group: str | None,
    schema: str | None,
    log_level: str,
) -> None:
    """Decide a Kafka topic's events as a member of a consumer group, keeping state on PostgreSQL.

    Each partition the group gives this worker is one log with its own watermark, dedup
    memory and engine state; its offset is committed with its state. Start several on
    the same topic and group to share the partitions; SIGTERM finishes the records in
    hand, commits and leaves the group; SIGHUP reads the rules file again (a file with
    problems is refused, the running rules stay); SIGUSR1 writes every thread's stack.
    See docs/cluster.md.

    Example: tripwire worker --rules rules.yaml --kafka 127.0.0.1:9092 --postgres postgresql://tripwire@db/tripwire
    """
    import faulthandler
    import logging
    import signal

    from tripwire.config import ConfigError, cluster_config
    from tripwire.server.run import configure_logging

    rules = _load(rules_path)
    flags = {"kafka": kafka, "topic": topic, "postgres": postgres, "group": group, "schema": schema}
    try:
        config = cluster_config(flags, rules)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    from tripwire.cluster.worker import Worker

    configure_logging(log_level)
    member = Worker(rules_path, bootstrap=config.kafka, topic=config.topic, postgres=config.postgres,
                    group=config.group, schema=config.schema)  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: member.stop())
    signal.signal(signal.SIGHUP, lambda *_: member.reload())
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where is it? without stopping it
    member.run(settings_from=config.described())
    if not member.left:  # a close stuck in librdkafka: its thread would hold up the exit too
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@main.command()
@click.option("--data", "data_dir", default="./tripwire-data", show_default=True, help="The server's data folder.")
@click.option("--postgres", metavar="DSN", help="A cluster's PostgreSQL instead of a data folder.")
@click.option("--schema", default="tripwire", show_default=True, help="With --postgres: the schema.")
@click.option("--trigger", help="Only this trigger's fires.")
@click.option("--user", help="Only this user's fires.")
@click.option("--since", metavar="ISO", help="Only fires at or after this time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0, 10_000_000), help="0: every fire.")
@click.option("--json", "as_json", is_flag=True, help="One fire a line as SPEC §4 gives it (as replay prints them).")
def fires(
    data_dir: str,
    postgres: str | None,
    schema: str,
    trigger: str | None,
    user: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the fires a server (or a cluster) recorded, newest first, with why suppressed ones were.

    Example: tripwire fires --data tripwire-data --trigger cart_abandonment --limit 20
    """
    from tripwire.server import views
    from tripwire.store import StoreLocationError, open_stores

    if postgres is None and not (Path(data_dir) / "tripwire.db").exists():
        raise click.BadParameter(f"{data_dir} holds no tripwire store", param_hint="--data")
    try:
        since_ms = parse_until(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace("--until", "--since"), param_hint="--since") from None
    try:
        stores = open_stores(postgres if postgres is not None else data_dir, schema=schema)
    except (StoreLocationError, TripwireError) as exc:  # a bad DSN, or a server that cannot be reached
        raise click.BadParameter(str(exc), param_hint="--postgres") from None
    try:
        found = stores.store.fires(trigger=trigger, user=user, since=since_ms, limit=limit or 2**62)
    finally:
        stores.close()
    if as_json:
        for fire in found:
            sys.stdout.buffer.write(_encode_line(_spec_fire(fire)) + b"\n")
        return
    rows = [views.fire(row) for row in found]
    table = Table()
    for column in ("fire_time", "trigger", "user_id", "key", "events", "suppressed"):
        table.add_column(column)
    for row in rows:
        reason = row["detail"] or row["suppressed"] or ""
        cells = (row["fire_time"], row["trigger"], row["user_id"], _text(row["key"]), ", ".join(row["events"]), reason)
        table.add_row(*(escape(cell) for cell in cells))
    Console(highlight=False).print(table)


def _spec_fire(row: FireRow) -> dict[str, object]:
    """A recorded fire with exactly the fields of SPEC §4, as `tripwire replay` prints it."""
    return {"trigger": row.trigger, "user_id": row.user_id, "key": row.key, "fire_time": format_ms(row.fire_time),
            "fire_id": row.fire_id, "events": list(row.events), "suppressed": row.suppressed}  # fmt: skip


def _text(value: object) -> str:
    return "" if value is None else str(value)


@main.group(invoke_without_command=True)
@click.option("--data", "data_dir", default="./tripwire-data", show_default=True, help="The server's data folder.")
@click.option("--dead", is_flag=True, help="Only deliveries that gave up (dead letters).")
@click.option("--status", type=click.Choice(["pending", "sending", "delivered", "dead", "dropped"]))
@click.option("--user", help="Only this user's deliveries.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.pass_context
def deliveries(ctx: click.Context, data_dir: str, dead: bool, status: str | None, user: str | None, limit: int) -> None:
    """List deliveries, newest first: what was sent, held, dropped, and why.

    Example: tripwire deliveries --dead
    """
    ctx.obj = data_dir
    if ctx.invoked_subcommand is not None:
        return
    outbox = _outbox(data_dir)
    rows = outbox.find(status="dead" if dead else status, user=user, limit=limit)
    table = Table()
    for column in ("id", "action", "trigger", "user", "status", "attempts", "updated", "reason"):
        table.add_column(column)
    for row in rows:
        cells = (str(row.id), row.action, row.trigger, row.user_id, row.status, str(row.attempts),
                 format_ms(row.updated_at), redact_text(row.reason or ""))  # fmt: skip
        table.add_row(*(escape(cell) for cell in cells))
    Console(highlight=False).print(table)


@deliveries.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Retry every dead delivery.")
@click.pass_obj
def deliveries_retry(data_dir: str, ids: tuple[int, ...], everything: bool) -> None:
    """Put dead deliveries back in line (a running server sends them within a second).

    Example: tripwire deliveries retry 12 13, or tripwire deliveries retry --all
    """
    if not ids and not everything:
        raise click.UsageError("name the delivery ids to retry, or pass --all")
    outbox = _outbox(data_dir)
    count = outbox.retry_dead(int(time.time() * 1000), None if everything else list(ids))
    click.echo(f"{count} dead deliver{'y' if count == 1 else 'ies'} queued again")


def _outbox(data_dir: str) -> Outbox:
    from tripwire.store import SqliteOutbox

    if not (Path(data_dir) / "tripwire.db").exists():
        raise click.BadParameter(f"{data_dir} holds no tripwire store", param_hint="--data")
    return SqliteOutbox(data_dir)
