"""Fault isolation benchmark: how long the writer stops when a round holds a poison event.

    python bench/isolation.py --users 50000 --round 2000 --big-round 20000 [--repeat 3]

A SQLite store is filled with `--users` users, each with an open abandonment window
(the state a busy shop has), untimed. Then, R times each (the median is reported):

  probe   a round of `--round` events with one identify whose trait cannot be saved:
          the events are probed one by one on scratch engines, the poison is found
          alone, the rest commit (the usual case)
  bisect  a round of `--big-round` events whose poison the one-by-one probe is made
          blind to (a fault that shows only within the whole round): the round is
          halved until the poison is found, a rebuild and a trial write each time
  timers  a round in which `--timers` users' windows come due and one user's fire
          cannot be written: the timers are probed user by user, that user's set aside

Each figure is the time from the failed write to the committed round, during which
the writer takes no events (requests wait; none is refused). Results are printed and
written to bench/out/isolation.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tripwire.events import Event, parse_event
from tripwire.pipeline import Pipeline
from tripwire.rules import parse_rules
from tripwire.store import SqliteStore
from tripwire.store.sqlite import SqliteBatch
from tripwire.timestamps import format_ms

ROOT = Path(__file__).resolve().parent.parent
RULES = """
settings: {allowed_lateness: 1s}
triggers:
  abandon: {when: add, unless: buy, within: 1h}
  big: {when: buy}
"""
T0 = 1_772_323_200_000
HOUR = 3_600_000


def track(name: str, user: str, mid: str, at: int) -> Event:
    return parse_event({"type": "track", "event": name, "userId": user, "messageId": mid, "timestamp": format_ms(at)})


def poison(user: str, mid: str, at: int) -> Event:
    """An identify past the edge's limits (made directly: the limits exist to refuse it)."""
    raw = {"type": "identify", "userId": user, "messageId": mid, "timestamp": format_ms(at), "traits": {"n": 2**64}}
    return Event("identify", None, user, None, mid, at, raw)


def filled(folder: Path, users: int) -> tuple[SqliteStore, Pipeline]:
    store = SqliteStore(folder)
    store.open()
    pipeline = Pipeline(store, parse_rules(RULES))
    engine = pipeline.recover()
    for start in range(0, users, 5_000):
        batch = [track("add", f"u{i}", f"a{i}", T0 + i) for i in range(start, min(users, start + 5_000))]
        pipeline.step(engine, [batch], now=T0 + users + 2_000, watermark=T0 + users + 1_000)
    return store, pipeline


def isolate(pipeline: Pipeline, batch: list[Event], watermark: int) -> tuple[float, list[str]]:
    engine = pipeline.recover()
    now = watermark + 1_000
    try:
        pipeline.step(engine, [batch], now=now, watermark=watermark)
    except Exception as exc:
        started = time.perf_counter()
        _, result = pipeline.isolate([batch], now=now, watermark=watermark, error=exc)
        return time.perf_counter() - started, [row.message_id for row in result.quarantined]
    raise AssertionError("the round did not fail")


def run_probe(folder: Path, args: argparse.Namespace, r: int) -> tuple[float, list[str]]:
    _, pipeline = filled(folder, args.users)
    at = T0 + args.users + 1_500
    batch = [track("buy", f"u{i}", f"b{i}", at) for i in range(args.round)]
    batch.insert(args.round // 2, poison("u7", "bad", at))
    return isolate(pipeline, batch, at + 1_000)


def run_bisect(folder: Path, args: argparse.Namespace, r: int) -> tuple[float, list[str]]:
    _, pipeline = filled(folder, args.users)
    at = T0 + args.users + 1_500
    batch = [track("buy", f"u{i % args.users}", f"b{i}", at) for i in range(args.big_round)]
    batch.insert(args.big_round * 3 // 4, poison("u9", "bad", at))
    real = Pipeline._probe
    Pipeline._probe = lambda self, live, event, now: None  # type: ignore[method-assign]
    try:
        return isolate(pipeline, batch, at + 1_000)
    finally:
        Pipeline._probe = real  # type: ignore[method-assign]


def run_timers(folder: Path, args: argparse.Namespace, r: int) -> tuple[float, list[str]]:
    _, pipeline = filled(folder, args.users)
    real = SqliteBatch.add_fires

    def broken(self: SqliteBatch, fires: list[Any]) -> None:
        if any(f.user_id == "u3" and f.trigger == "abandon" for f in fires):
            raise RuntimeError("a bug in writing u3's reminder")
        real(self, fires)

    SqliteBatch.add_fires = broken  # type: ignore[method-assign]
    try:  # the first `--timers` users' windows come due in this round
        return isolate(pipeline, [], T0 + HOUR + args.timers + 1)
    finally:
        SqliteBatch.add_fires = real  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--round", type=int, default=2_000)
    parser.add_argument("--big-round", type=int, default=20_000)
    parser.add_argument("--timers", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    modes: dict[str, Callable[[Path, argparse.Namespace, int], tuple[float, list[str]]]] = {
        "probe": run_probe,
        "bisect": run_bisect,
        "timers": run_timers,
    }
    results: dict[str, Any] = {"users": args.users, "round": args.round, "big_round": args.big_round,
                               "timers": args.timers, "modes": {}}  # fmt: skip
    for name, run in modes.items():
        times = []
        for r in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                seconds, found = run(Path(tmp), args, r)
            expected = ["timers:u3:" in m for m in found] if name == "timers" else [m == "bad" for m in found]
            assert found and all(expected), f"{name}: isolated {found}"
            times.append(seconds)
            print(f"{name:7} run {r + 1}: {seconds:6.2f} s  ({', '.join(found)})", flush=True)
        results["modes"][name] = {"median_s": statistics.median(times), "runs_s": times}
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "isolation.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, figures in results["modes"].items():
        print(f"{name:7} median {figures['median_s']:6.2f} s")


if __name__ == "__main__":
    main()
