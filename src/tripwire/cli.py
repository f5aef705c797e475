"""The `tripwire` command line."""

from __future__ import annotations

import gc
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tripwire import __version__
from tripwire.durations import format_duration
from tripwire.engine import Fire
from tripwire.errors import RulesError
from tripwire.replay import Replayer, ReplayStats, open_events, parse_until
from tripwire.rules import Rules, Trigger, load_rules

PROGRESS_MIN_BYTES = 1_000_000
_encode_line = msgspec.json.Encoder().encode


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _load(path: str) -> Rules:
    try:
        return load_rules(path)
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
    for column in ("trigger", "shape", "holds when", "key", "cooldown", "guards"):
        table.add_column(column)
    for trigger in loaded.triggers:
        cells = (
            trigger.id,
            trigger.shape,
            _shape(trigger),
            trigger.key or "",
            format_duration(trigger.cooldown) if trigger.cooldown else "",
            "; ".join(guard.text for guard in trigger.guards),
        )
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    settings = loaded.settings
    console.print(
        f"allowed lateness {format_duration(settings.allowed_lateness)}, "
        f"messageIds remembered {format_duration(settings.dedup_window)}"
    )


@main.command()
@click.argument("rules", type=click.Path(dir_okay=False))
@click.argument("events", type=str)
@click.option("--until", metavar="ISO", help="End of the replay: fire timers due by this time too.")
@click.option("--out", "out_path", metavar="FILE", help="Write fires here instead of stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def replay(rules: str, events: str, until: str | None, out_path: str | None, quiet: bool) -> None:
    """Run EVENTS through RULES and write every fire as one JSON object a line.

    EVENTS is JSONL in arrival order: a .jsonl or .jsonl.gz file, or - for stdin.
    Suppressed fires are written too, with their reason. A summary goes to stderr.

    Example: tripwire replay examples/shop/rules.yaml events.jsonl.gz --out fires.jsonl
    """
    loaded = _load(rules)
    # The engine keeps many small long-lived objects and makes many short-lived ones;
    # the default thresholds make the collector walk the long-lived ones far too often.
    gc.set_threshold(100_000, 50, 100)
    try:
        until_ms = parse_until(until)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None
    if events != "-" and not Path(events).is_file():
        raise click.BadParameter(f"{events}: no such file", param_hint="EVENTS")
    console = _err()
    with ExitStack() as stack:
        out: IO[bytes] = stack.enter_context(Path(out_path).open("wb")) if out_path else sys.stdout.buffer
        write = out.write

        def emit(fire: Fire) -> None:
            write(_encode_line(fire.to_dict()) + b"\n")

        replayer = Replayer(loaded, emit)
        lines, raw = stack.enter_context(open_events(events))
        size = os.fstat(raw.fileno()).st_size if events != "-" else 0
        show = not quiet and console.is_terminal and (events == "-" or size >= PROGRESS_MIN_BYTES)
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not show,
        ) as progress:
            task = progress.add_task("replay", total=size or None)
            for number, line in enumerate(lines, start=1):
                replayer.add_line(line, number)
                if number % 20_000 == 0 and show:
                    progress.update(task, completed=raw.tell() if size else number)
        stats = replayer.finish(until_ms)
        out.flush()
    if not quiet:
        _summary(console, stats, loaded)


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
    fires = Table(title="fires", title_justify="left")
    fires.add_column("trigger")
    fires.add_column("fired", justify="right")
    fires.add_column("suppressed", justify="right")
    for trigger in rules.triggers:
        fires.add_row(trigger.id, f"{stats.fires[trigger.id]:,}", f"{stats.suppressed[trigger.id]:,}")
    console.print(fires)
