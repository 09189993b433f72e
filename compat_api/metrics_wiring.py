"""Feeding the Prometheus metrics (SPEC §11) from the live objects, mostly at scrape time.

`wire_metrics(ctx)` (called by `build_context`) connects `ctx.metrics` to what the service runs:

- at scrape time (`Metrics.add_refresher`, run by `render()` before the exposition), it reads
  the ingest queue (`IngestQueue.depth` and its capacity), each run's
  watermark − lastBin and status, the hub's clients and slow-client counters (`Hub.stats()`),
  recovery progress, storage health and failed runs (`StorageHealth`, `RunFailures`), the Kafka
  sink's `sent` count and the Kafka consumer's lag — nothing is added to the ingest or publish hot
  paths for these;
- synchronously, as events happen, it counts seq'd events handed to the hub (the WebSocket
  fan-out, through a hub listener). Events written to `events.log` and the bins re-evaluated
  while recovery replays are observed by the runtime itself (`Metrics` is its `RuntimeMetrics` port).

Cumulative counts owned by another component (hub drops, Kafka sends) become Prometheus counters
by adding the increase since the previous scrape. `flowtime_ingest_to_publish_seconds` is observed
by `LiveService` itself (it knows when a request was accepted); frames and bins per run by
`Metrics.observe_ingest`, snapshots by `Metrics.snapshot_committed`.

Kafka consumer lag is, per assigned partition, the consumer's last known high watermark minus
the next offset the source will hand over (only partitions that have delivered a record since
start-up; the high watermark comes from the latest fetch).
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from typing import Any

from compat_api.context import AppContext
from compat_api.metrics import Metrics
from engine_live.protocol import RunStatus

log = logging.getLogger("flowtime.metrics")

__all__ = ["MetricsWiring", "wire_metrics"]


class MetricsWiring:
    """The bridge between one `AppContext` and its `Metrics` (see the module docstring)."""

    def __init__(self, ctx: AppContext, metrics: Metrics) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self._seen_runs: set[str] = set()
        self._last: dict[str, int] = {}  # cumulative counts at the previous scrape
        self._lag_series: set[tuple[str, int]] = set()

    def install(self) -> None:
        """Listen to the hub and read the rest at scrape time."""
        if self.ctx.hub is not None:
            self.ctx.hub.add_listener(self._on_hub_event)
        self.metrics.add_refresher(self.refresh)

    # -- event-time counters ------------------------------------------------------------------------
    def _on_hub_event(self, run_id: str, ev: Any) -> None:
        if ev.seqd:
            self.metrics.events_published.labels(sink="websocket").inc()

    # -- scrape-time values -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Copy live-run, hub and Kafka values into the metrics; a part that fails is logged and skipped."""
        for part in (self._refresh_live, self._refresh_hub, self._refresh_kafka):
            try:
                part()
            except Exception:  # a broken reader must not take /metrics down
                log.exception("metrics refresh failed in %s", part.__name__)

    def _increase(self, key: str, total: int) -> int:
        """The growth of a cumulative count since the previous scrape (a restart of it counts anew)."""
        before = self._last.get(key, 0)
        self._last[key] = total
        return total - before if total >= before else total

    def _refresh_live(self) -> None:
        live, m = self.ctx.live, self.metrics
        m.ingest_queue_capacity.set(self.ctx.settings.ingest_queue_frames)
        if live is None:
            return
        m.ingest_queue_depth.set(max(0, live.service.queue.depth))
        by_status: Tally[str] = Tally()
        runs = dict(live.service.runs)
        for run_id, h in runs.items():
            run = h.run
            by_status[run.status.value] += 1
            m.set_position(run_id, int(run.watermark), int(run.last_bin))
        for status in RunStatus:
            m.live_runs.labels(status=status.value).set(by_status[status.value])
        for gone in self._seen_runs - set(runs):
            m.forget_run(gone)
        self._seen_runs = set(runs)
        self._refresh_failures()
        progress = live.recovery_progress()
        total, done = progress["runs"], progress["runsDone"]
        m.recovery_runs.labels(state="done").set(done)
        m.recovery_runs.labels(state="todo").set(max(0, total - done))
        # bins still to replay are not known ahead (the logs are read run by run): 0 once ready
        if live.ready:
            m.recovery_bins.labels(state="todo").set(0)

    def _refresh_failures(self) -> None:
        """Storage health per kind of write, and failed runs per cause (cumulative counts → counters)."""
        live, m = self.ctx.live, self.metrics
        assert live is not None
        health = live.service.ctx.storage
        for kind, state in health.kinds.items():
            m.storage_failing.labels(kind=kind).set(1 if state.failing else 0)
            m.storage_failures.labels(kind=kind).inc(self._increase(f"storage:{kind}", state.failures))
        for cause, total in live.service.failures.counts.items():
            m.run_failures.labels(cause=cause).inc(self._increase(f"failures:{cause}", total))

    def _refresh_hub(self) -> None:
        hub = self.ctx.hub
        if hub is None:
            return
        s = hub.stats()
        m = self.metrics
        m.websocket_clients.set(s.clients)
        for reason, total in (("superseded", s.coalesced), ("resync", s.resyncs), ("too_slow", s.slow_closes)):
            m.websocket_drops.labels(reason=reason).inc(self._increase(f"drops:{reason}", int(total)))
        m.websocket_connections.set(s.connections)
        m.websocket_refused.inc(self._increase("ws:refused", int(s.connections_refused)))
        m.stream_cache_bytes.labels(cache="encodings").set(s.encoding_cache_bytes)
        m.stream_cache_bytes.labels(cache="snapshots").set(s.snapshot_cache_bytes)

    def _refresh_kafka(self) -> None:
        kafka = self.ctx.kafka
        if kafka is None:
            return
        m = self.metrics
        sink = kafka.sink
        if sink is not None:
            m.events_published.labels(sink="kafka").inc(self._increase("kafka:sent", int(sink.stats().sent)))
        source = kafka.source
        lag = source.lag() if source is not None else {}
        for topic, partition in self._lag_series - set(lag):  # partitions no longer assigned
            m.kafka_consumer_lag.remove(topic, str(partition))
        for (topic, partition), value in lag.items():
            m.kafka_consumer_lag.labels(topic=topic, partition=str(partition)).set(value)
        self._lag_series = set(lag)


def wire_metrics(ctx: AppContext) -> MetricsWiring | None:
    """Connect `ctx.metrics` to `ctx.live`, the hub and (once started) the Kafka wiring."""
    if ctx.metrics is None:
        return None
    wiring = MetricsWiring(ctx, ctx.metrics)
    wiring.install()
    return wiring
