"""The composition root: the one place that builds, starts and stops everything the service runs.

Build (`build_context`, in this order):
1. auth (`compat_api.auth`) and Prometheus metrics (`compat_api.metrics`);
2. the stream hub (`stream_hub.hub.Hub`);
3. the live runtime (`engine_live.runtime.service.LiveService`) on its ports: the ingestion log
   (`ingestion.live_log.FileLogStore`), the snapshot store (`snapshot_writer.live_store.
   FileSnapshotStore`, given the log's truncation), the hub as its event sink, metrics; both stores
   write through one `FsOps` (`engine_live.runtime.storage`: the real `os` calls, or a failing one
   a test injects);
4. its HTTP face (`compat_api.live_api.LiveApi`) and the scrape-time metrics wiring.

Start (`start`, from the app's lifespan): the data folders, then recovery of every unfinished run
(in the background: `/readyz` answers 503 with progress until it is done), then — in the service
process only (`freeze_gc`, set by `flowtime serve` and the demo, never by tests) — `gc.freeze()` of
everything built so far, then Kafka (the sink re-sends the recovered history before any new event;
the source skips what the logs hold).

Stop (`stop`, reverse order): Kafka, then every WebSocket client (1001), then the runtime (queued
requests drain, a last snapshot of each open run, files closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable

from compat_api.auth import load_authenticator
from compat_api.context import AppContext
from compat_api.kafka_wiring import KafkaWiring
from compat_api.live_api import LiveApi
from compat_api.metrics import Metrics
from compat_api.metrics_wiring import wire_metrics
from compat_api.settings import Settings
from engine_live.runtime.context import RuntimeContext, RuntimeSettings
from engine_live.runtime.records import LogRecord
from engine_live.runtime.service import LiveService
from engine_live.runtime.storage import REAL_FS, FsOps
from ingestion.live_log import FileLogStore
from ingestion.log_segments import truncate_log_before
from snapshot_writer.live_store import FileSnapshotStore
from stream_hub.hub import Hub, HubLimits

DATA_FOLDERS = ("runs", "bundles", "inputs", "compares")


def runtime_settings(settings: Settings) -> RuntimeSettings:
    """The live runtime's limits and cadences, from the service settings."""
    return RuntimeSettings(
        data_dir=settings.data_dir,
        max_model_bytes=settings.max_model_bytes,
        max_frames_per_request=settings.max_frames_per_request,
        ingest_queue_frames=settings.ingest_queue_frames,
        max_live_runs=settings.max_live_runs,
        max_live_bytes=settings.max_live_bytes,
        max_bins_ahead=settings.max_bins_ahead,
        snapshot_every_bins=settings.snapshot_every_bins,
        snapshot_every_seconds=settings.snapshot_every_seconds,
        snapshots_kept=settings.snapshots_kept,
        hub_history_events=settings.hub_history_events,
        hub_history_bytes=settings.hub_history_bytes,
        recovery_history_records=settings.recovery_history_records,
    )


def build_live_service(
    settings: Settings,
    *,
    hub: Hub | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
    snapshot_fault: Callable[[str], None] | None = None,
    fs: FsOps = REAL_FS,
    evaluate_fault: Callable[[str, LogRecord], None] | None = None,
) -> LiveService:
    """The live runtime on the file-backed ports (and the hub and metrics, when given).

    `clock` drives the snapshot cadence and close retries, `snapshot_fault` is called after each
    commit step, `fs` makes every write of the stores, `evaluate_fault` sees every record applied
    (tests inject a clock they step, crashes, failing writes and a failing evaluator).
    """
    ctx = RuntimeContext(
        runtime_settings(settings),
        FileLogStore(max_bins_ahead=settings.max_bins_ahead, fs=fs),
        FileSnapshotStore(truncate_log=lambda live_dir, offset: truncate_log_before(live_dir, offset, fs), fs=fs),
        clock=clock,
        snapshot_fault=snapshot_fault,
        evaluate_fault=evaluate_fault,
    )
    if hub is not None:
        ctx.sink = hub
    if metrics is not None:
        ctx.metrics = metrics
    return LiveService(ctx)


def build_context(
    settings: Settings, *, fs: FsOps = REAL_FS, evaluate_fault: Callable[[str, LogRecord], None] | None = None
) -> AppContext:
    """Everything the service runs, built and wired (nothing started yet; tests may inject `fs` and
    `evaluate_fault`, see `build_live_service`)."""
    metrics = Metrics()
    hub = Hub(
        HubLimits(
            settings.hub_history_events,
            settings.hub_history_bytes,
            settings.client_queue_events,
            encoding_cache_bytes=settings.ws_encoding_cache_bytes,
            snapshot_cache_bytes=settings.ws_snapshot_cache_bytes,
            max_connections=settings.ws_max_connections,
            max_connections_per_key=settings.ws_max_connections_per_token,
        )
    )
    service = build_live_service(settings, hub=hub, metrics=metrics, fs=fs, evaluate_fault=evaluate_fault)
    ctx = AppContext(
        settings,
        auth=load_authenticator(settings),
        metrics=metrics,
        live=LiveApi(service, state_window_max_bins=settings.state_window_max_bins),
        hub=hub,
    )
    wire_metrics(ctx)  # scrape-time readers of queue, hub, runs, recovery and Kafka
    return ctx


class Lifecycle:
    """Starts and stops what `build_context` built, in the documented order."""

    def __init__(self, ctx: AppContext, *, freeze_gc: bool = False) -> None:
        self.ctx = ctx
        self.freeze_gc = freeze_gc  # the service process (not tests): freeze what start-up built
        self._startup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the data folders; recover, then start Kafka, in the background."""
        for sub in DATA_FOLDERS:
            (self.ctx.settings.data_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.ctx.live is not None:
            self._startup = asyncio.create_task(self._recover_then_consume(), name="live-recovery")

    async def _recover_then_consume(self) -> None:
        ctx = self.ctx
        assert ctx.live is not None
        await ctx.live.start()  # recovery: /readyz answers 503 with progress until it is done
        if self.freeze_gc:
            # everything built so far (modules, recovered runs) lives as long as the process: keep it
            # out of every later full collection, which otherwise stalls the loop for tens of ms
            gc.freeze()
        if ctx.hub is not None and ctx.settings.kafka_bootstrap:
            ctx.kafka = KafkaWiring(ctx.settings, ctx.live, ctx.hub)
            await ctx.kafka.start()

    async def stop(self) -> None:
        """Kafka, WebSocket clients, then the runtime."""
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._startup
        if self.ctx.kafka is not None:
            await self.ctx.kafka.stop()
        if self.ctx.hub is not None:
            self.ctx.hub.close_all(1001)
        if self.ctx.live is not None:
            await self.ctx.live.stop()
