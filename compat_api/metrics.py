"""Prometheus metrics of the service (SPEC §11), in one registry per app.

Every metric lives in the `Metrics` object's own `CollectorRegistry` — never the process-wide
default — so tests can build apps repeatedly. `docs/operations.md` lists each name and label;
`tests/compat_api/test_metrics.py` pins that list against `render()`.

Labels are bounded: `run_id` series are removed with `forget_run` when a run leaves memory,
`sink` is one of `SINKS`, `status` one of the run statuses. Snapshot age is computed at scrape
time from the injected clock, so it never goes stale between snapshots.

Values owned by other components (queue depth, hub clients and drops, recovery progress, Kafka
lag, runs by status) are read from the live objects at scrape time: `add_refresher` registers a
callback that `render()` runs first (`compat_api/metrics_wiring.py` installs them).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine_live.protocol import RunStatus
from engine_live.runtime.failures import CAUSES
from engine_live.runtime.storage import STORAGE_KINDS

SINKS = ("websocket", "kafka", "log")
DROP_REASONS = ("superseded", "resync", "too_slow")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _SnapshotAge(Collector):
    """`flowtime_snapshot_age_seconds{run_id}`: now − the last committed snapshot, per run."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.committed_at: dict[str, float] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "flowtime_snapshot_age_seconds",
            "Seconds since the run's last committed snapshot",
            labels=["run_id"],
        )
        now = self._clock()
        for run_id, at in sorted(self.committed_at.items()):
            family.add_metric([run_id], max(0.0, now - at))
        yield family


class Metrics:
    """The service's metrics; components update the attributes, `/metrics` serves `render()`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._clock = clock
        # ingestion
        self.ingested_frames = Counter(
            "flowtime_ingested_frames", "Frames accepted into a run's ingestion log", ["run_id"], registry=r
        )
        self.ingested_bins = Counter(
            "flowtime_ingested_bins",
            "Bins evaluated or re-evaluated (run_update events) per run",
            ["run_id"],
            registry=r,
        )
        self.ingest_queue_depth = Gauge("flowtime_ingest_queue_depth", "Frames waiting in the ingest queue", registry=r)
        self.ingest_queue_capacity = Gauge(
            "flowtime_ingest_queue_capacity", "Maximum frames in the ingest queue", registry=r
        )
        self.bins_behind = Gauge("flowtime_bins_behind", "watermark − lastBin per live run", ["run_id"], registry=r)
        self.ingest_to_publish_seconds = Histogram(
            "flowtime_ingest_to_publish_seconds",
            "From a frame's acceptance to the publication of its bin's run_update",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._publication_metrics(r)
        # snapshots
        self.snapshot_duration_seconds = Histogram(
            "flowtime_snapshot_duration_seconds",
            "Time to write and commit a snapshot",
            buckets=SNAPSHOT_BUCKETS,
            registry=r,
        )
        self.snapshot_size_bytes = Gauge(
            "flowtime_snapshot_size_bytes",
            "Size of the run's last committed snapshot",
            ["run_id"],
            registry=r,
        )
        self._snapshot_age = _SnapshotAge(clock)
        r.register(self._snapshot_age)
        # recovery
        self.recovery_runs = Gauge(
            "flowtime_recovery_runs", "Runs to recover at start, by state (done|todo)", ["state"], registry=r
        )
        self.recovery_bins = Gauge(
            "flowtime_recovery_bins", "Bins to replay at start, by state (done|todo)", ["state"], registry=r
        )
        # kafka and runs
        self.kafka_consumer_lag = Gauge(
            "flowtime_kafka_consumer_lag",
            "Records between the group's position and the partition end",
            ["topic", "partition"],
            registry=r,
        )
        self.live_runs = Gauge("flowtime_live_runs", "Runs in memory by status", ["status"], registry=r)
        self.run_failures = Counter(
            "flowtime_run_failures", "Live runs that became failed, by cause", ["cause"], registry=r
        )
        # storage
        self.storage_failures = Counter(
            "flowtime_storage_failures", "Failed durable writes (ENOSPC, EIO, fsync) by kind", ["kind"], registry=r
        )
        self.storage_failing = Gauge(
            "flowtime_storage_failing", "1 while the last write of this kind failed", ["kind"], registry=r
        )
        self._refreshers: list[Callable[[], None]] = []
        self._touch_label_sets()

    def _publication_metrics(self, r: CollectorRegistry) -> None:
        """The fan-out's metrics: events per sink, WebSocket clients, connections, drops and caches."""
        self.events_published = Counter("flowtime_events_published", "Events published per sink", ["sink"], registry=r)
        self.websocket_clients = Gauge("flowtime_websocket_clients", "Connected WebSocket clients", registry=r)
        self.websocket_drops = Counter(
            "flowtime_websocket_drops",
            "Slow-client drops: superseded run_updates, resyncs, clients closed as too slow",
            ["reason"],
            registry=r,
        )
        self.websocket_connections = Gauge(
            "flowtime_websocket_connections", "Open WebSocket connections (subscribed or not)", registry=r
        )
        self.websocket_refused = Counter(
            "flowtime_websocket_refused", "WebSocket connections refused by the connection limits", registry=r
        )
        self.stream_cache_bytes = Gauge(
            "flowtime_stream_cache_bytes", "Bytes held by the stream caches", ["cache"], registry=r
        )

    def _touch_label_sets(self) -> None:
        """Create the fixed label values so every series shows from the first scrape."""
        for sink in SINKS:
            self.events_published.labels(sink=sink)
        for reason in DROP_REASONS:
            self.websocket_drops.labels(reason=reason)
        for cache in ("encodings", "snapshots"):
            self.stream_cache_bytes.labels(cache=cache)
        for state in ("done", "todo"):
            self.recovery_runs.labels(state=state)
            self.recovery_bins.labels(state=state)
        for status in RunStatus:
            self.live_runs.labels(status=status.value)
        for cause in CAUSES:
            self.run_failures.labels(cause=cause)
        for kind in STORAGE_KINDS:
            self.storage_failures.labels(kind=kind)
            self.storage_failing.labels(kind=kind)

    # -- helpers for the labelled per-run series ----------------------------------------------------
    def observe_ingest(self, run_id: str, frames: int, events: Sequence[Mapping[str, Any]]) -> None:
        """One applied ingest record: its frames, the bins it (re-)evaluated, the run's position."""
        self.ingested_frames.labels(run_id=run_id).inc(frames)
        updates = [ev for ev in events if ev.get("type") == "run_update"]
        if updates:
            self.ingested_bins.labels(run_id=run_id).inc(len(updates))
            last = updates[-1]
            self.set_position(run_id, int(last["watermark"]), int(last["lastBin"]))

    def observe_ingest_to_publish(self, seconds: float) -> None:
        """A bin's run_update went out `seconds` after its oldest request was accepted."""
        self.ingest_to_publish_seconds.observe(seconds)

    def observe_published(self, events: Sequence[Mapping[str, Any]], *, logged: bool, recovering: bool) -> None:
        """Seq'd events written to `events.log`; while recovery replays, the bins it re-evaluated."""
        if logged:
            self.events_published.labels(sink="log").inc(len(events))
        if recovering:
            bins = sum(1 for event in events if event.get("type") == "run_update")
            if bins:
                self.recovery_bins.labels(state="done").inc(bins)

    def snapshot_committed(self, run_id: str, duration_s: float, size_bytes: int) -> None:
        """A snapshot was committed: its duration, size and when (for the snapshot age)."""
        self.snapshot_duration_seconds.observe(duration_s)
        self.snapshot_size_bytes.labels(run_id=run_id).set(size_bytes)
        self._snapshot_age.committed_at[run_id] = self._clock()

    def set_position(self, run_id: str, watermark: int, last_bin: int) -> None:
        """Set the run's bins-behind gauge to watermark − lastBin (at least 0)."""
        self.bins_behind.labels(run_id=run_id).set(max(0, watermark - last_bin))

    def forget_run(self, run_id: str) -> None:
        """Drop the run's labelled series (deleted or cleaned-up runs)."""
        for metric in (self.ingested_frames, self.ingested_bins, self.bins_behind, self.snapshot_size_bytes):
            with contextlib.suppress(KeyError):
                metric.remove(run_id)
        self._snapshot_age.committed_at.pop(run_id, None)

    def add_refresher(self, refresh: Callable[[], None]) -> None:
        """Run `refresh()` before every `render()`: it copies live values into the metrics."""
        self._refreshers.append(refresh)

    def refresh(self) -> None:
        """Call every registered refresher (they copy live values into the metrics)."""
        for refresh in self._refreshers:
            refresh()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type (refreshed from the live objects)."""
        self.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["DROP_REASONS", "SINKS", "Metrics"]
