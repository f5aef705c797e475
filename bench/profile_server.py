"""`python -m profile_server serve ...`: `tripwire` under cProfile in every thread.

cProfile sees only the thread that enabled it, and `tripwire serve` does its work in
several: the event loop (HTTP, JSON, parse_event) in the main thread, the engine and the
SQLite commits in the writer thread, reads in worker threads. This wraps every thread's
`run` in its own profiler and, at exit, writes one profile per thread name to
$TRIPWIRE_BENCH_PROFILE_DIR/ingest-<thread>.prof (threads of one pool merged) and a
summary of each, by total time, to ingest-profile.txt. Used by bench/ingest.py --profile.
"""

from __future__ import annotations

import atexit
import cProfile
import io
import os
import pstats
import re
import runpy
import sys
import threading
from pathlib import Path

OUT = Path(os.environ.get("TRIPWIRE_BENCH_PROFILE_DIR", "bench/out"))
_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile()
    with _lock:
        _profiles.append((self.name, profile))
    profile.enable()
    try:
        _original_run(self)
    finally:
        profile.disable()


def _group(name: str) -> str:
    """Pool threads (asyncio_3, ThreadPoolExecutor-0_1, AnyIO worker ...) under one name."""
    return re.sub(r"[\W_]*\d+(_\d+)?$", "", name).replace(" ", "-") or "thread"


def _dump() -> None:
    main.disable()
    OUT.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[cProfile.Profile]] = {}
    for name, profile in [("main", main), *_profiles]:
        groups.setdefault(_group(name), []).append(profile)
    summary = io.StringIO()
    for name, profiles in sorted(groups.items()):
        try:
            stats = pstats.Stats(profiles[0], stream=summary)
            for more in profiles[1:]:
                stats.add(more)
        except (TypeError, ValueError):  # a profiler that never saw a call
            continue
        stats.dump_stats(OUT / f"ingest-{name}.prof")
        summary.write(f"\n==== thread {name} ({len(profiles)}) ====\n")
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    (OUT / "ingest-profile.txt").write_text(summary.getvalue())


threading.Thread.run = _profiled_run  # type: ignore[method-assign]  # the point of this module
main = cProfile.Profile()
atexit.register(_dump)
sys.argv = ["tripwire", *sys.argv[1:]]
main.enable()
runpy.run_module("tripwire", run_name="__main__", alter_sys=True)
