"""Replay benchmark: events/s, peak memory and state per user for the shop example.

    python bench/replay.py --events 1000000 --users 100000 [--seed 1] [--repeat 3]

The stream (examples/shop/generate.py) is generated in memory and serialised to
JSONL lines first, untimed. Then, R times each (the median is reported):

  engine  the engine alone on already-parsed events: Engine.offer in batches of
          tripwire.replay.BATCH, advance after each batch, finish at the end
  dicts   replay_events() on decoded dicts: parse_event + engine + fires as dicts
  jsonl   the `tripwire replay` path: Replayer.add_line on JSONL bytes (msgspec
          decode + parse_event + engine) with each fire encoded to a JSON line

The cyclic garbage collector is frozen and disabled while timing, as `tripwire replay`
does (`--gc freeze` keeps it running, as in a library caller; the `gc s` column shows
what it costs). Prepared input no later mode needs is dropped between modes.

One more untimed run of each mode under tracemalloc gives the peak of Python
allocations during the run; `maxrss_growth` is how far the run raised the process's
resident high-water mark (a lower bound: freed memory is reused). State per active
user is the deep size of the engine's per-user state at the end of the jsonl run
(events, fires and the rules excluded), over the users the engine holds state for.

Results are printed and written to bench/out/replay.json. Goals (the issue): at
least 250,000 events/s on one core with 100,000 users, and under 1 KB of state per
active user. `--profile` adds a cProfile of one jsonl run (top functions by tottime).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

import tripwire.replay
from shop import load_generator  # bench/shop.py
from tripwire import __version__
from tripwire.engine import Engine, Fire
from tripwire.events import Event, parse_event
from tripwire.replay import Replayer, replay_events
from tripwire.rules import Rules, load_rules

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RULES = ROOT / "examples" / "shop" / "rules.yaml"
OUT = ROOT / "bench" / "out" / "replay.json"
GOAL_EVENTS_PER_S = 350_000  # the engine alone (issue 9)
GOAL_JSONL_EVENTS_PER_S = 200_000
GOAL_STATE_BYTES = 1_024


# --- the three measured paths -------------------------------------------------------


def run_engine(rules: Rules, events: list[Event]) -> tuple[Engine, int]:
    """The engine alone, batched as the replayer drives it; returns (engine, fires)."""
    # Configured exactly as a replay configures it (no dedup expiry, no dirty tracking).
    engine = Replayer(rules, lambda fire: None).engine
    offer = engine.offer
    advance = engine.advance
    fires = 0
    batch = tripwire.replay.BATCH
    for start in range(0, len(events), batch):
        for event in events[start : start + batch]:
            offer(event)
        fires += len(advance())
    fires += len(engine.finish())
    return engine, fires


def run_dicts(rules: Rules, objs: list[dict[str, Any]]) -> tuple[Engine | None, int]:
    """The public replay_events() on decoded dicts."""
    result = replay_events(rules, objs)
    return None, len(result.fires)


def run_jsonl(rules: Rules, lines: list[bytes]) -> tuple[Engine, int]:
    """What `tripwire replay` does per line, with fires encoded to a list, not a file."""
    replayer, fires = _replay_lines(rules, lines)
    return replayer.engine, fires


def _replay_lines(rules: Rules, lines: list[bytes]) -> tuple[Replayer, int]:
    out: list[bytes] = []
    encode = msgspec.json.Encoder().encode

    def emit(fire: Fire) -> None:
        out.append(encode(fire.to_dict()) + b"\n")

    replayer = Replayer(rules, emit)
    add_line = replayer.add_line
    for number, line in enumerate(lines, start=1):
        add_line(line, number)
    replayer.finish()
    return replayer, len(out)


# --- measuring ------------------------------------------------------------------------


def _maxrss_bytes() -> int:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class _GcClock:
    """Time spent in the cyclic garbage collector, per generation, while installed."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._began
            self.collections[generation] += 1

    def __enter__(self) -> _GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def timed(fn: Callable[[], tuple[Engine | None, int]], n: int, repeat: int) -> dict[str, Any]:
    walls: list[float] = []
    cpus: list[float] = []
    gcs: list[float] = []
    fires = 0
    growth = 0
    full_collections = 0
    for _ in range(repeat):
        gc.collect()
        before = _maxrss_bytes()
        with _GcClock() as clock:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            engine, fires = fn()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        growth = max(growth, _maxrss_bytes() - before)
        walls.append(wall)
        cpus.append(cpu)
        gcs.append(sum(clock.seconds))
        full_collections = clock.collections[2]
        del engine
    median = statistics.median(walls)
    return {
        "runs_s": [round(w, 3) for w in walls],
        "median_s": round(median, 3),
        "events_per_s": round(n / median),
        "cpu_s": [round(c, 3) for c in cpus],
        "events_per_cpu_s": round(n / statistics.median(cpus)),
        "gc_s": [round(g, 3) for g in gcs],
        "gc_full_collections": full_collections,
        "fires": fires,
        "maxrss_growth_bytes": growth,
    }


def traced_peak(fn: Callable[[], tuple[Engine | None, int]]) -> int:
    """Peak bytes of Python allocations made during one run (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        engine, _ = fn()
        _, peak = tracemalloc.get_traced_memory()
        del engine
    finally:
        tracemalloc.stop()
    return peak


def deep_size(root: Any, seen: set[int]) -> int:
    """Bytes of `root` and everything it reaches that `seen` has not counted yet."""
    size = 0
    stack = [root]
    getsizeof = sys.getsizeof
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        size += getsizeof(obj)
        cls = obj.__class__
        if cls is dict:
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif cls in (list, tuple, set, frozenset):
            stack.extend(obj)
        elif cls in (str, int, float, bool, bytes) or obj is None:
            continue
        else:
            for name in getattr(cls, "__slots__", ()):
                value = getattr(obj, name, None)
                if value is not None:
                    stack.append(value)
            if hasattr(obj, "__dict__"):
                stack.append(obj.__dict__)
    return size


def state_sizes(engine: Engine) -> dict[str, Any]:
    """Deep sizes of the engine's state, per structure; shared objects count once."""
    # The rules and small singletons are reachable from some state (e.g. unkeyed
    # markers); count them as already seen.
    seen: set[int] = {id(None)}
    per_user_structures = {
        "users": engine.users,
        "timers": engine._timers,  # heap entries (deadline, seq, uid, trigger, key)
        "links": engine.links,
    }
    sizes = {name: deep_size(obj, seen) for name, obj in per_user_structures.items()}
    per_user = sum(sizes.values())
    breakdown = _user_breakdown(engine)
    sizes["seen_message_ids"] = deep_size(engine.seen, seen)
    sizes["dirty"] = deep_size(engine.dirty, seen)
    active = len(engine.users)
    nonempty = sum(1 for user in engine.users.values() if not user.is_empty())
    open_items = 0
    for user in engine.users.values():
        for slot in user.slots:
            if slot is None:
                continue
            open_items += len(slot) if slot.__class__ is dict else 1
    stored = _stored_bytes(engine)
    return {
        "active_users": active,
        "users_with_state": nonempty,
        "linked_ids": len(engine.links),
        "timer_heap_entries": len(engine._timers),
        "open_windows_lists_deadlines": open_items,
        "bytes": sizes,
        "user_state_breakdown_bytes": breakdown,
        "state_bytes_per_active_user": round(per_user / max(active, 1)),
        "stored_bytes_per_active_user": None if stored is None else round(stored / max(active, 1)),
        "engine_bytes_per_active_user_incl_dedup": round(
            (per_user + sizes["seen_message_ids"] + sizes["dirty"]) / max(active, 1)
        ),
    }


def _stored_bytes(engine: Engine) -> int | None:
    """Total size of every user's saved state (what a store persists), if available."""
    try:
        from tripwire.engine.snapshot import dump_user  # noqa: PLC0415  # optional
    except ImportError:
        return None
    return sum(len(dump_user(engine, user)) for user in engine.users.values())


def _user_breakdown(engine: Engine) -> dict[str, int]:
    """Where the bytes of `users` go: the objects themselves, traits, guard history,
    cooldowns, and each trigger's windows, lists or deadlines (message ids included)."""
    seen: set[int] = {id(None)}
    out: dict[str, int] = {"users dict": sys.getsizeof(engine.users)}
    seen.add(id(engine.users))
    names = [trigger.id for trigger in engine.rules.triggers]
    parts = ["user objects", "traits", "history", "last_fire", *names]
    for part in parts[1:]:
        out[part] = 0
    base = 0
    getsizeof = sys.getsizeof
    for uid, user in engine.users.items():
        base += getsizeof(user) + getsizeof(user.slots)
        seen.update((id(user), id(user.slots)))
        base += deep_size(uid, seen)
        out["traits"] += deep_size(user.traits, seen)
        out["history"] += deep_size(user.history, seen)
        out["last_fire"] += deep_size(user.last_fire, seen)
        for name, slot in zip(names, user.slots, strict=True):
            out[name] += deep_size(slot, seen)
    out["user objects"] = base
    return out


def profile(rules: Rules, lines: list[bytes], top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_jsonl(rules, lines)
    profiler.disable()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(OUT.with_suffix(".prof")))
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return buffer.getvalue()


# --- main -------------------------------------------------------------------------------


def _settle(mode: str) -> None:
    """Collect, then (unless --gc on) freeze what is alive, as a replay starts with an empty heap."""
    gc.collect()
    if mode != "on":
        gc.freeze()


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark tripwire replay on the shop example stream.",
        epilog="example: python bench/replay.py --events 1000000 --users 100000 --repeat 3",
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per mode (median)")
    parser.add_argument("--rules", default=str(DEFAULT_RULES))
    parser.add_argument("--modes", default="engine,dicts,jsonl", help="comma-separated subset of engine,dicts,jsonl")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the extra traced run per mode (it is slow)")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one jsonl run and print the top functions"
    )
    parser.add_argument("--top", type=int, default=15, help="functions to list with --profile")
    parser.add_argument(
        "--gc",
        choices=("off", "freeze", "on"),
        default="off",
        help="off (default, as `tripwire replay` runs): gc.freeze() then gc.disable(); "
        "freeze: gc.freeze() before each mode, collector on (library use, e.g. "
        "replay_events from your code); on: leave the collector alone",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"override tripwire.replay.BATCH (events per engine batch; default {tripwire.replay.BATCH})",
    )
    parser.add_argument("--out", default=str(OUT), help="JSON results file")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"engine", "dicts", "jsonl"}
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}")

    if args.batch is not None:
        if args.batch < 1:
            parser.error("--batch must be >= 1")
        # Replayer reads the module global as it goes; so does run_engine.
        tripwire.replay.BATCH = args.batch
    rules = load_rules(args.rules)
    gen = load_generator()

    _progress(f"generating {args.events:,} events for {args.users:,} users (seed {args.seed}) ...")
    t0 = time.perf_counter()
    objs: list[dict[str, Any]] | None = list(gen.generate(args.events, args.users, args.seed))
    assert objs is not None
    encode = msgspec.json.Encoder().encode
    lines = [encode(obj) + b"\n" for obj in objs]
    prepare_s = time.perf_counter() - t0
    n = len(objs)
    parsed = [parse_event(dict(obj)) for obj in objs] if "engine" in modes else None
    _progress(f"  ready in {prepare_s:.1f}s: {sum(map(len, lines)) / 1e6:,.0f} MB of JSONL")
    if args.gc == "off":
        gc.disable()
    load_before = os.getloadavg()

    def engine_run() -> tuple[Engine | None, int]:
        assert parsed is not None
        return run_engine(rules, parsed)

    def dicts_run() -> tuple[Engine | None, int]:
        assert objs is not None
        return run_dicts(rules, objs)

    runners: dict[str, Callable[[], tuple[Engine | None, int]]] = {
        "engine": engine_run,
        "dicts": dicts_run,
        "jsonl": lambda: run_jsonl(rules, lines),
    }
    results: dict[str, Any] = {}
    for i, mode in enumerate(modes):
        _settle(args.gc)
        _progress(f"timing {mode} x{args.repeat} ...")
        results[mode] = timed(runners[mode], n, args.repeat)
        if not args.no_tracemalloc:
            _progress(f"tracing {mode} ...")
            results[mode]["tracemalloc_peak_bytes"] = traced_peak(runners[mode])
        # A file replay holds none of the prepared input: drop what no later mode needs,
        # so it neither slows the collector nor spreads new objects over a huge heap.
        if "engine" not in modes[i + 1 :]:
            parsed = None
        if "dicts" not in modes[i + 1 :]:
            objs = None
    _settle(args.gc)

    _progress("measuring state ...")
    replayer, _ = _replay_lines(rules, lines)
    gc.collect()
    state = state_sizes(replayer.engine)
    stats = replayer.stats
    counts = {
        "read": stats.read,
        "accepted": stats.accepted,
        "late": stats.late,
        "duplicate": stats.duplicate,
        "bad": stats.bad,
    }
    fires_by_trigger = {
        trigger.id: {
            "fired": stats.fires[trigger.id],
            "suppressed": stats.suppressed[trigger.id],
        }
        for trigger in rules.triggers
    }
    del replayer

    profile_text = profile(rules, lines, args.top) if args.profile else None

    report = {
        "tripwire": __version__,
        "commit": _commit(),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()} ({platform.processor() or '?'})",
        "events": n,
        "users": args.users,
        "seed": args.seed,
        "repeat": args.repeat,
        "rules": str(Path(args.rules).resolve().relative_to(ROOT))
        if Path(args.rules).resolve().is_relative_to(ROOT)
        else args.rules,
        "batch": tripwire.replay.BATCH,
        "gc": args.gc,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "decisions": counts,
        "fires_by_trigger": fires_by_trigger,
        "modes": results,
        "state": state,
        "goals": {
            "events_per_s": GOAL_EVENTS_PER_S,
            "jsonl_events_per_s": GOAL_JSONL_EVENTS_PER_S,
            "state_bytes_per_active_user": GOAL_STATE_BYTES,
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _print(report)
    if profile_text is not None:
        print(
            f"\ncProfile of one jsonl run (top {args.top} by tottime; "
            f"full stats in {OUT.with_suffix('.prof').relative_to(ROOT)}):"
        )
        print(profile_text)
    print(f"\nwritten to {out}")
    return 0


def _commit() -> str | None:
    """The repository's HEAD commit, with `+dirty` when src/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=ROOT, check=False)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty.returncode else "")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} MB"


def _print(report: dict[str, Any]) -> None:
    print(f"\ntripwire {report['tripwire']} ({report['commit']}) on Python {report['python']}, {report['machine']}")
    print(
        f"{report['events']:,} events, {report['users']:,} users, seed {report['seed']}, "
        f"median of {report['repeat']} runs"
    )
    load = report["load_average_before_after"]
    print(
        f"gc {report['gc']}; load average {load[0]} -> {load[1]} on {report['cpu_count']} "
        "CPUs (wall-clock events/s suffer when other processes compete; ev/cpu-s less so)"
    )
    header = (
        f"{'mode':<8} {'median s':>9} {'events/s':>10} {'ev/cpu-s':>10} {'gc s':>6} {'fires':>8} "
        f"{'traced peak':>12} {'maxrss +':>10}"
    )
    print(header)
    print("-" * len(header))
    for mode, r in report["modes"].items():
        print(
            f"{mode:<8} {r['median_s']:>9.3f} {r['events_per_s']:>10,} "
            f"{r['events_per_cpu_s']:>10,} {statistics.median(r['gc_s']):>6.2f} {r['fires']:>8,} "
            f"{_mb(r.get('tracemalloc_peak_bytes')):>12} {_mb(r['maxrss_growth_bytes']):>10}"
        )
    s = report["state"]
    print(
        f"\nstate at the end: {s['active_users']:,} users with state objects "
        f"({s['users_with_state']:,} non-empty), {s['linked_ids']:,} linked ids, "
        f"{s['open_windows_lists_deadlines']:,} open windows/lists/deadlines, "
        f"{s['timer_heap_entries']:,} timer heap entries"
    )
    print("  bytes: " + ", ".join(f"{k} {_mb(v)}" for k, v in s["bytes"].items()))
    users = max(s["active_users"], 1)
    print(
        "  users, per active user: "
        + ", ".join(f"{k} {v / users:,.0f} B" for k, v in s["user_state_breakdown_bytes"].items())
    )
    print(
        f"  per active user: {s['state_bytes_per_active_user']:,} B of user state "
        f"(users + timers + links); {s['engine_bytes_per_active_user_incl_dedup']:,} B "
        f"with the replay's messageId set"
    )
    if s.get("stored_bytes_per_active_user") is not None:
        print(f"  saved (MessagePack, dump_user): {s['stored_bytes_per_active_user']:,} B per user")
    print(
        "decisions: "
        + ", ".join(f"{k} {v:,}" for k, v in report["decisions"].items())
        + "\nfires (fired/suppressed): "
        + ", ".join(f"{t} {c['fired']:,}/{c['suppressed']:,}" for t, c in report["fires_by_trigger"].items())
    )
    goals = report["goals"]
    best = max((r["events_per_s"] for m, r in report["modes"].items() if m == "jsonl"), default=None)
    engine = report["modes"].get("engine", {}).get("events_per_s")
    print("\ngoals:")
    if engine is not None:
        print(
            f"  engine   {engine:>10,} ev/s vs {goals['events_per_s']:,}: "
            f"{'met' if engine >= goals['events_per_s'] else 'NOT met'}"
        )
    if best is not None:
        print(
            f"  jsonl    {best:>10,} ev/s vs {goals['jsonl_events_per_s']:,}: "
            f"{'met' if best >= goals['jsonl_events_per_s'] else 'NOT met'}"
        )
    per_user = s["state_bytes_per_active_user"]
    print(
        f"  state    {per_user:>10,} B/user vs {goals['state_bytes_per_active_user']:,}: "
        f"{'met' if per_user < goals['state_bytes_per_active_user'] else 'NOT met'}"
    )


if __name__ == "__main__":
    sys.exit(main())
