"""Ingest benchmark: a real `tripwire serve` on loopback, measured from outside.

    python bench/ingest.py [--runs 3] [--duration 20] [--connections 8] [--rate 2000]

Each run starts the server (a subprocess, a fresh data folder, examples/shop/rules.yaml,
log level info), then measures:

  batch    sustained events/s through POST /v1/batch, 100 events a request, over
           --duration seconds (after --warmup seconds not counted) with --connections
           keep-alive connections sending back to back. Only 200 answers count, and the
           server answers 200 only once the events are committed to disk.
  latency  single POST /v1/track (or /v1/page ..., by the event's type) at a fixed --rate
           for --latency-duration seconds, open loop: request i is due at start + i/rate
           and its latency is measured from that due time, so a slow server cannot hide
           behind a client that waits for it (no coordinated omission).

The events come from examples/shop/generate.py's generate() (a pool, reused in order),
each sent with a unique messageId and a timestamp of now. The client speaks HTTP/1.1 on
raw asyncio streams, to take as little of the machine's CPU as it can; the CPU time of
client and server in each phase is reported beside the figures. Results are printed
and written to bench/out/ingest.json, progress goes to stderr.

Goals (the issue): >= 50,000 events/s sustained through batches with durable commits;
p99 < 25 ms at 2,000 requests/s.

`--pauses` times every pass of the server's cycle collector (bench/pauses_server.py): each
holds the GIL, so the longest passes are stalls every request in flight waits out.

`--profile` runs the server under cProfile in every thread (bench/profile_server.py) and
writes the per-thread profiles to bench/out/ingest-<thread>.prof with a summary; the
profiler slows the server, so figures of a profiled run are not results.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serverproc import ServerProcess  # noqa: E402  # the tests' helper: one way to run a server
from shop import load_generator  # noqa: E402  # bench/shop.py

DEFAULT_RULES = ROOT / "examples" / "shop" / "rules.yaml"
OUT = ROOT / "bench" / "out"
GOAL_EVENTS_PER_S = 50_000
GOAL_P99_MS = 25.0
KEEP_ALIVE_REUSE_S = 4.0
_encode = msgspec.json.encode


def _ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def progress(message: str) -> None:
    print(f"[ingest] {message}", file=sys.stderr, flush=True)


# -- a minimal HTTP/1.1 client ------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer, f"{host}:{port}".encode())

    async def post(self, path: str, body: bytes, authorization: bytes) -> tuple[int, bytes]:
        head = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self.host
            + b"\r\nContent-Type: application/json\r\nAuthorization: " + authorization
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )  # fmt: skip
        self.writer.write(head + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        close = False
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        reply = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
            raise ConnectionResetError("the server closed the connection")
        return status, reply

    def close(self) -> None:
        self.writer.close()


# -- the events ----------------------------------------------------------------------------


class Pool:
    """Shop events, handed out in order (round and round) with unique messageIds."""

    def __init__(self, events: list[dict[str, Any]], prefix: str) -> None:
        self.events = events
        self.prefix = prefix
        self._next = itertools.count()

    def take(self, n: int, now_ms: int) -> list[dict[str, Any]]:
        stamp = _iso(now_ms)
        events = self.events
        size = len(events)
        out = []
        for _ in range(n):
            i = next(self._next)
            out.append({**events[i % size], "messageId": f"{self.prefix}-{i}", "timestamp": stamp})
        return out


def make_pool(size: int, users: int, seed: int) -> list[dict[str, Any]]:
    generator = load_generator()
    events = []
    for generated in generator.generate(size, users, seed):
        event = dict(generated)
        for name in ("sentAt", "receivedAt", "originalTimestamp"):
            event.pop(name, None)
        events.append(event)
    return events


# -- CPU accounting --------------------------------------------------------------------------


def _server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its threads, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    pid: int
    wall: float = 0.0
    server: float = 0.0
    client: float = 0.0

    def __enter__(self) -> CpuMeter:
        self._start = (time.monotonic(), _server_cpu(self.pid), _client_cpu())
        return self

    def __exit__(self, *_exc: Any) -> None:
        wall, server, client = self._start
        self.wall = time.monotonic() - wall
        self.server = _server_cpu(self.pid) - server
        self.client = _client_cpu() - client

    def shares(self) -> dict[str, float]:
        """CPU used, in cores (1.0 = one core busy for the whole phase)."""
        return {"server_cores": round(self.server / self.wall, 2), "client_cores": round(self.client / self.wall, 2)}


# -- phase 1: batches ------------------------------------------------------------------------


@dataclass
class BatchResult:
    events_per_s: float = 0.0
    requests_per_s: float = 0.0
    events: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    request_ms_p50: float = 0.0
    request_ms_p99: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


async def run_batches(
    server: ServerProcess, pool: Pool, *, connections: int, batch: int, duration: float, warmup: float
) -> BatchResult:
    authorization = b"Basic " + base64.b64encode(f"{server.write_key}:".encode())
    started = time.monotonic()
    measure_from = started + warmup
    end = measure_from + duration
    counted = 0
    statuses: Counter[int] = Counter()
    errors = 0
    durations: list[float] = []

    async def worker() -> None:
        nonlocal counted, errors
        conn = await Connection.open("127.0.0.1", server.port)
        try:
            while (now := time.monotonic()) < end:
                body = _encode({"batch": pool.take(batch, _ms())})
                sent = time.perf_counter()
                try:
                    status, _ = await conn.post("/v1/batch", body, authorization)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    conn.close()
                    conn = await Connection.open("127.0.0.1", server.port)
                    continue
                done = time.monotonic()
                if measure_from <= now and done <= end:
                    statuses[status] += 1
                    durations.append(time.perf_counter() - sent)
                    if status == 200:
                        counted += batch
        finally:
            conn.close()

    async def report() -> None:
        last = 0
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            elapsed = time.monotonic() - measure_from
            if elapsed > 0:
                progress(f"batch  {elapsed:5.1f}s  {counted:>10,} events  {(counted - last):>8,} ev/s")
            else:
                progress(f"batch  warming up ({-elapsed:.1f}s left)")
            last = counted

    with CpuMeter(server.proc.pid if server.proc else 0) as cpu:
        reporter = asyncio.create_task(report())
        await asyncio.gather(*(worker() for _ in range(connections)))
        reporter.cancel()
    seconds = duration
    durations.sort()
    return BatchResult(
        events_per_s=round(counted / seconds),
        requests_per_s=round(statuses[200] / seconds, 1),
        events=counted,
        seconds=seconds,
        statuses={str(k): v for k, v in sorted(statuses.items())},
        errors=errors,
        request_ms_p50=round(_quantile(durations, 0.5) * 1000, 2),
        request_ms_p99=round(_quantile(durations, 0.99) * 1000, 2),
        cpu=cpu.shares(),
    )


# -- phase 2: latency at a fixed rate --------------------------------------------------------


@dataclass
class LatencyResult:
    rate: float = 0.0
    achieved_rate: float = 0.0
    requests: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    connections_opened: int = 0
    cpu: dict[str, float] = field(default_factory=dict)


def _single_bodies(pool: Pool, count: int, start_ms: float, rate: float) -> list[tuple[str, bytes]]:
    """Request i's path and body, its timestamp the time it is due."""
    out = []
    for i in range(count):
        (event,) = pool.take(1, int(start_ms + i * 1000 / rate))
        kind = event.pop("type", "track")
        out.append((f"/v1/{kind}", _encode(event)))
    return out


async def run_latency(
    server: ServerProcess, pool: Pool, *, rate: float, duration: float, max_connections: int
) -> LatencyResult:
    authorization = b"Basic " + base64.b64encode(f"{server.write_key}:".encode())
    count = int(rate * duration)
    lead = 0.5  # seconds to build the bodies before the first request is due
    loop = asyncio.get_running_loop()
    start_wall_ms = _ms() + lead * 1000
    requests = _single_bodies(pool, count, start_wall_ms, rate)
    start = loop.time() + max(0.05, (start_wall_ms - _ms()) / 1000)
    idle: list[tuple[float, Connection]] = []  # (when it was last used, connection)
    opened = 0
    slots = asyncio.Semaphore(max_connections)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0

    def take_idle() -> Connection | None:
        # uvicorn closes a keep-alive connection after 5 s without a request; reuse only fresher ones
        while idle:
            used, conn = idle.pop()
            if loop.time() - used < KEEP_ALIVE_REUSE_S:
                return conn
            conn.close()
        return None

    async def one(i: int, due: float) -> None:
        nonlocal opened, errors
        path, body = requests[i]
        async with slots:
            conn = take_idle()
            try:
                if conn is None:
                    opened += 1
                    conn = await Connection.open("127.0.0.1", server.port)
                status, _ = await conn.post(path, body, authorization)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                if conn is not None:
                    conn.close()
                return
            latencies.append(loop.time() - due)
            statuses[status] += 1
            idle.append((loop.time(), conn))

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            elapsed = loop.time() - start
            recent = sorted(latencies[-int(rate) :])
            progress(
                f"latency {elapsed:5.1f}s  {len(latencies):>8,} answered  "
                f"p99 of the last second {_quantile(recent, 0.99) * 1000:6.1f} ms"
            )

    tasks = []
    with CpuMeter(server.proc.pid if server.proc else 0) as cpu:
        reporter = asyncio.create_task(report())
        for i in range(count):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        last_due = loop.time()
        await asyncio.gather(*tasks)
        reporter.cancel()
    for _, conn in idle:
        conn.close()
    latencies.sort()
    return LatencyResult(
        rate=rate,
        achieved_rate=round(count / max(last_due - start, 1e-9), 1),
        requests=count,
        ok=statuses[200],
        statuses={str(k): v for k, v in sorted(statuses.items())},
        errors=errors,
        p50_ms=round(_quantile(latencies, 0.5) * 1000, 2),
        p90_ms=round(_quantile(latencies, 0.9) * 1000, 2),
        p99_ms=round(_quantile(latencies, 0.99) * 1000, 2),
        p999_ms=round(_quantile(latencies, 0.999) * 1000, 2),
        max_ms=round(latencies[-1] * 1000, 2) if latencies else 0.0,
        connections_opened=opened,
        cpu=cpu.shares(),
    )


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# -- a run -----------------------------------------------------------------------------------


def start_server(rules: Path, work: Path, *, profile_dir: Path | None, pauses: Path | None = None) -> ServerProcess:
    env = {}
    module = "tripwire"
    if profile_dir is not None:
        env["TRIPWIRE_BENCH_PROFILE_DIR"] = str(profile_dir)
        module = "profile_server"
    elif pauses is not None:
        env["TRIPWIRE_BENCH_PAUSES"] = str(pauses)
        module = "pauses_server"
    if module != "tripwire":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]))
    server = ServerProcess(rules, work / "data", log_path=work / "server.log", env=env, log_level="info", module=module)
    server.start()
    return server


async def one_run(args: argparse.Namespace, events: list[dict[str, Any]], number: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tripwire-bench-"))
    profile_dir = OUT if args.profile else None
    pauses = work / "pauses.json" if args.pauses else None
    server = start_server(args.rules, work, profile_dir=profile_dir, pauses=pauses)
    progress(f"run {number}: server on port {server.port}, data in {work / 'data'}")
    try:
        pool = Pool(events, f"bench{number}-{os.getpid()}")
        batch = await run_batches(
            server, pool, connections=args.connections, batch=args.batch, duration=args.duration, warmup=args.warmup
        )
        progress(f"run {number}: batch {batch.events_per_s:,} events/s")
        latencies = []
        for rate in args.rate:
            await asyncio.sleep(1.0)
            latency = await run_latency(
                server, pool, rate=rate, duration=args.latency_duration, max_connections=args.max_connections
            )
            latencies.append(asdict(latency))
            progress(
                f"run {number}: {rate:,.0f} req/s: p50 {latency.p50_ms} ms, p99 {latency.p99_ms} ms, "
                f"max {latency.max_ms} ms"
            )
    finally:
        code = server.stop(timeout=60)
        size = sum(f.stat().st_size for f in (work / "data").glob("tripwire.db*"))
        collector = gc_pauses(pauses) if pauses is not None and pauses.exists() else None
        if collector is not None:
            progress(f"run {number}: cycle collector: " + "; ".join(
                f"gen{g['generation']} {g['passes']} passes, max {g['max_ms']} ms, {g['over_25ms']} over 25 ms"
                for g in collector["by_generation"]
            ))  # fmt: skip
        if code != 0:
            progress(f"run {number}: the server exited with {code}; its log: {work / 'server.log'}")
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {"batch": asdict(batch), "latency": latencies, "server_exit": code, "db_bytes": size,
            "cycle_collector": collector}  # fmt: skip


def gc_pauses(path: Path) -> dict[str, Any]:
    """The collector's passes in the server (bench/pauses_server.py), by generation."""
    saved = json.loads(path.read_text())
    passes = saved["passes"]
    by_generation = []
    for generation in (0, 1, 2):
        times = sorted(ms for _, g, ms, _ in passes if g == generation)
        by_generation.append({
            "generation": generation, "passes": len(times), "total_ms": round(sum(times), 1),
            "median_ms": round(statistics.median(times), 2) if times else 0.0,
            "max_ms": round(times[-1], 1) if times else 0.0, "over_25ms": sum(ms > 25 for ms in times),
        })  # fmt: skip
    return {"threshold": saved["threshold"], "by_generation": by_generation}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _median_batch(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run["batch"][key] for run in runs))


def _median_latency(runs: list[dict[str, Any]], index: int, key: str) -> float:
    return round(float(statistics.median(run["latency"][index][key] for run in runs)), 2)


def summarize(runs: list[dict[str, Any]], rates: list[float]) -> dict[str, Any]:
    latency = []
    for index, rate in enumerate(rates):
        row: dict[str, Any] = {"rate": rate}
        for key in ("achieved_rate", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"):
            row[key] = _median_latency(runs, index, key)
        latency.append(row)
    return {"events_per_s": _median_batch(runs, "events_per_s"), "latency": latency}


def print_table(runs: list[dict[str, Any]], medians: dict[str, Any]) -> None:
    print("Batches: POST /v1/batch, 100 events a request")
    rows: list[tuple[str, ...]] = [
        ("", "events/s", "requests/s", "request p50 ms", "request p99 ms", "non-200", "server CPU", "client CPU")
    ]
    for i, run in enumerate(runs, start=1):
        b = run["batch"]
        bad = sum(v for k, v in b["statuses"].items() if k != "200") + b["errors"]
        rows.append((
            f"run {i}", f"{b['events_per_s']:,}", f"{b['requests_per_s']:,}", f"{b['request_ms_p50']}",
            f"{b['request_ms_p99']}", str(bad), f"{b['cpu']['server_cores']}", f"{b['cpu']['client_cores']}",
        ))  # fmt: skip
    rows.append(("median", f"{medians['events_per_s']:,.0f}", "", "", "", "", "", ""))
    rows.append(("goal", f">= {GOAL_EVENTS_PER_S:,}", "", "", "", "", "", ""))
    _print_rows(rows)
    print()
    print("Latency: single POST /v1/track (page, identify ...), open loop, from the time each request was due")
    rows = [("", "rate/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "non-200", "server CPU", "client CPU")]
    for i, run in enumerate(runs, start=1):
        for lat in run["latency"]:
            bad = sum(v for k, v in lat["statuses"].items() if k != "200") + lat["errors"]
            rows.append((
                f"run {i}", f"{lat['rate']:,.0f}", f"{lat['p50_ms']}", f"{lat['p90_ms']}", f"{lat['p99_ms']}",
                f"{lat['p999_ms']}", f"{lat['max_ms']}", str(bad), f"{lat['cpu']['server_cores']}",
                f"{lat['cpu']['client_cores']}",
            ))  # fmt: skip
    for lat in medians["latency"]:
        rows.append((
            "median", f"{lat['rate']:,.0f}", f"{lat['p50_ms']}", f"{lat['p90_ms']}", f"{lat['p99_ms']}",
            f"{lat['p999_ms']}", f"{lat['max_ms']}", "", "", "",
        ))  # fmt: skip
    rows.append(("goal", "2,000", "", "", f"< {GOAL_P99_MS}", "", "", "", "", ""))
    _print_rows(rows)
    print("CPU: cores busy during the phase (1.0 = one core all the time); client and server share the machine.")


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


async def main_async(args: argparse.Namespace) -> None:
    progress(f"generating a pool of {args.pool:,} shop events for {args.users:,} users")
    events = make_pool(args.pool, args.users, args.seed)
    runs = [await one_run(args, events, number) for number in range(1, args.runs + 1)]
    medians = summarize(runs, args.rate)
    print_table(runs, medians)
    OUT.mkdir(parents=True, exist_ok=True)
    goal_rate = next((lat for lat in medians["latency"] if lat["rate"] == 2000), None)
    report = {
        "command": "python bench/ingest.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": runs,
        "median": medians,
        "goals": {
            "events_per_s": GOAL_EVENTS_PER_S,
            "p99_ms_at_2000_per_s": GOAL_P99_MS,
            "events_per_s_met": medians["events_per_s"] >= GOAL_EVENTS_PER_S,
            "p99_met": None if goal_rate is None else goal_rate["p99_ms"] < GOAL_P99_MS,
        },
    }
    path = OUT / ("ingest-profiled.json" if args.profile else "ingest.json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {path}")


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a new server; medians are reported")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the batch phase (measured)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of batches before measuring")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections in the batch phase")
    parser.add_argument("--batch", type=int, default=100, help="events per /v1/batch request")
    parser.add_argument(
        "--rate", type=_rates, default=[2000.0], help="requests/s of the latency phase; 500,1000,2000 runs each"
    )
    parser.add_argument("--latency-duration", type=float, default=10.0, help="seconds of the latency phase")
    parser.add_argument("--max-connections", type=int, default=256, help="connection cap in the latency phase")
    parser.add_argument("--pool", type=int, default=200_000, help="distinct events generated (reused in order)")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="run the server under cProfile (not a result)")
    parser.add_argument("--keep", action="store_true", help="keep the data folders and server logs")
    parser.add_argument(
        "--pauses", action="store_true", help="time every pass of the server's cycle collector (bench/pauses_server.py)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
