"""`python -m pauses_server serve ...`: `tripwire` with every cycle-collector pass timed.

Each pass of the garbage collector holds the GIL: the event loop, the writer and every
other thread wait for it. This records each pass (its generation, how long it took, what
it freed) and at exit writes them to $TRIPWIRE_BENCH_PAUSES as JSON, for
`bench/ingest.py --pauses`. The cost of the timing itself is two clock reads a pass.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(os.environ.get("TRIPWIRE_BENCH_PAUSES", "bench/out/pauses.json"))
_passes: list[tuple[float, int, float, int]] = []  # (wall time, generation, ms, objects freed)
_started = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        ms = (time.perf_counter() - _started[0]) * 1000
        _passes.append((time.time(), int(info["generation"]), round(ms, 3), int(info["collected"])))


def _dump() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"passes": _passes, "threshold": gc.get_threshold()}))


gc.callbacks.append(_timed)
atexit.register(_dump)
sys.argv = ["tripwire", *sys.argv[1:]]
runpy.run_module("tripwire", run_name="__main__", alter_sys=True)
