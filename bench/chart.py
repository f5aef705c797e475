"""Draw the benchmark results as one chart: `python bench/chart.py` -> bench/results.png.

Reads bench/out/replay.json and bench/out/ingest.json (written by bench/replay.py and
bench/ingest.py) and marks each goal, so where we stand is seen at a glance.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend must be chosen first

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "results.png"))
    args = parser.parse_args()
    replay = json.loads((HERE / "out/replay.json").read_text())
    ingest = json.loads((HERE / "out/ingest.json").read_text())

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.6))
    labels = {"engine": "engine alone\n(parsed events)", "dicts": "parse + engine\n(dicts)",
              "jsonl": "full replay\n(JSONL lines)"}  # fmt: skip
    modes = [m for m in ("engine", "dicts", "jsonl") if m in replay["modes"]]
    rates = [replay["modes"][m]["events_per_s"] / 1000 for m in modes]
    bars = left.bar([labels[m] for m in modes], rates, color="#4c78a8")
    left.bar_label(bars, fmt="%.0fk")
    left.axhline(250, color="#e45756", linestyle="--", label="goal: 250k events/s")
    left.set_ylabel("thousand events/s (median)")
    left.set_title(f"Replay, {replay['events']:,} events, {replay['users']:,} users, one core")
    left.legend(loc="upper right")

    runs = ingest["runs"]
    batch = statistics.median(run["batch"]["events_per_s"] for run in runs) / 1000
    bar = middle.bar(["/v1/batch\n(100 events a request)"], [batch], color="#4c78a8", width=0.4)
    middle.bar_label(bar, fmt="%.1fk")
    middle.axhline(50, color="#e45756", linestyle="--", label="goal: 50k events/s")
    middle.set_ylim(0, max(60, batch * 1.2))
    middle.set_ylabel("thousand events/s, durably committed (median)")
    middle.set_title("Ingest throughput")
    middle.legend(loc="upper right")

    by_rate: dict[float, list[dict[str, float]]] = {}
    for run in runs:
        for point in run["latency"]:
            by_rate.setdefault(point["rate"], []).append(point)
    xs = sorted(by_rate)
    for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("max_ms", "^:")):
        right.plot(xs, [statistics.median(p[key] for p in by_rate[x]) for x in xs], style, label=key[:-3])
    right.axhline(25, color="#e45756", linestyle="--", label="goal: p99 < 25 ms at 2,000/s")
    right.set_yscale("log")
    right.set_xlabel("single /v1/track requests per second (open loop)")
    right.set_ylabel("latency, ms (median of runs)")
    right.set_title("Ingest latency")
    right.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
