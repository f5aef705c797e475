"""Prometheus metrics of one server, in a registry it owns (never the process-global one).

The HTTP layer counts what it receives and decides; the service reports fires through
`Metrics.fire`; the gauges are read from `Service.status()` when `/metrics` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tripwire.engine import Fire

DECISIONS: Final = ("accepted", "late", "duplicate", "quarantined", "bad")
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# From a cached SQLite commit (about a millisecond) to a queue backed up for seconds.
_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DELIVERY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's counters, histogram and gauges; safe to call from any thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.events_received = Counter(
            "tripwire_events_received", "Events received over HTTP, bad ones included.", registry=reg
        )
        self.events = Counter(
            "tripwire_events",
            "Events by decision: accepted, late, duplicate, quarantined or bad.",
            ["decision"],
            registry=reg,
        )
        for decision in DECISIONS:
            self.events.labels(decision)
        self.ingest_latency = Histogram(
            "tripwire_ingest_latency_seconds",
            "Time from an ingest request's arrival to its durable answer.",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.engine_lag = Gauge(
            "tripwire_engine_lag_seconds", "How far the engine's watermark trails the service clock.", registry=reg
        )
        self.quarantined = Gauge(
            "tripwire_quarantined_events",
            "Events kept in the quarantine (they could not be applied or saved), and those not retried yet.",
            ["state"],
            registry=reg,
        )
        self.holding = Gauge(
            "tripwire_watermark_held",
            "1 while the watermark waits after a restart (restart_grace) for SDKs to resend, else 0.",
            registry=reg,
        )
        self.store_ok = Gauge(
            "tripwire_store_writable", "1 while the store takes writes, 0 while they fail.", registry=reg
        )
        self.timer_backlog = Gauge("tripwire_timer_backlog", "Timers due but not yet fired.", registry=reg)
        self.queue_depth = Gauge("tripwire_ingest_queue_depth", "Events waiting to be written.", registry=reg)
        self.fires = Counter("tripwire_fires", "Fires emitted, by trigger.", ["trigger"], registry=reg)
        self.suppressed = Counter(
            "tripwire_suppressed", "Fires suppressed by a cooldown or a guard, by trigger.", ["trigger"], registry=reg
        )
        self.attempts = Counter(
            "tripwire_delivery_attempts",
            "Delivery attempts by action and outcome: ok, retry (failed, will retry) or failed (gave up).",
            ["action", "outcome"],
            registry=reg,
        )
        self.delivery_latency = Histogram(
            "tripwire_delivery_latency_seconds",
            "How long one delivery attempt took, by action.",
            ["action"],
            buckets=_DELIVERY_BUCKETS,
            registry=reg,
        )
        self.deliveries = Gauge(
            "tripwire_deliveries", "Deliveries by action and status (dead ones need a look).", ["action", "status"],
            registry=reg,
        )  # fmt: skip
        self.conversions = Gauge(
            "tripwire_conversions",
            "Fires and their goal conversions by trigger, for the treated and held-out groups.",
            ["trigger", "group", "kind"],
            registry=reg,
        )

    def received(self, count: int) -> None:
        self.events_received.inc(count)

    def decided(self, decisions: Iterable[str]) -> None:
        """Count the service's decisions for one request (`accepted`, `late`, `duplicate`)."""
        tally: dict[str, int] = {}
        for decision in decisions:
            tally[decision] = tally.get(decision, 0) + 1
        for decision, count in tally.items():
            self.events.labels(decision).inc(count)

    def bad(self, count: int) -> None:
        if count:
            self.events.labels("bad").inc(count)

    def latency(self, seconds: float) -> None:
        self.ingest_latency.observe(seconds)

    def fire(self, fire: Fire) -> None:
        """Count one fire of the engine, suppressed or not."""
        counter = self.fires if fire.suppressed is None else self.suppressed
        counter.labels(fire.trigger).inc()

    def on_fires(self, fires: Iterable[Fire]) -> None:
        """Count a batch of fires; fits `Service.listeners`."""
        for fire in fires:
            self.fire(fire)

    def triggers(self, trigger_ids: Iterable[str]) -> None:
        """Make every trigger's series exist (at zero) so dashboards see it before it fires."""
        for trigger_id in trigger_ids:
            self.fires.labels(trigger_id)
            self.suppressed.labels(trigger_id)

    def status(self, status: Mapping[str, Any]) -> None:
        """Set the gauges from `Service.status()`; keys it lacks leave their gauge as it was."""
        lag = status.get("engine_lag_ms")
        if isinstance(lag, int | float):
            self.engine_lag.set(lag / 1000)
        for key, flag in (("store_ok", self.store_ok), ("holding_watermark", self.holding)):
            value = status.get(key)
            if isinstance(value, bool):
                flag.set(int(value))
        for key, gauge in (("timer_backlog", self.timer_backlog), ("queued_events", self.queue_depth)):
            value = status.get(key)
            if isinstance(value, int | float):
                gauge.set(value)

    def quarantine(self, total: int, not_retried: int) -> None:
        self.quarantined.labels("total").set(total)
        self.quarantined.labels("not_retried").set(not_retried)

    def on_delivery(self, outcome: str, action: str, latency_ms: float) -> None:
        """Count one delivery attempt (`ok`, `retry` or `failed`)."""
        self.attempts.labels(action, outcome).inc()
        self.delivery_latency.labels(action).observe(latency_ms / 1000)

    def delivery_state(self, actions: Mapping[str, Any], triggers: Mapping[str, Any]) -> None:
        """Set the delivery and conversion gauges from the outbox's and the goals' stats."""
        for action, stats in actions.items():
            for status, count in stats.get("deliveries", {}).items():
                self.deliveries.labels(action, status).set(count)
        for trigger, stats in triggers.items():
            for group, fires, converted in (
                ("treated", "fires", "conversions"), ("holdout", "holdout", "holdout_conversions")
            ):  # fmt: skip
                self.conversions.labels(trigger, group, "fires").set(stats.get(fires) or 0)
                self.conversions.labels(trigger, group, "conversions").set(stats.get(converted) or 0)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
