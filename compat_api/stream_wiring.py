"""Wiring the stream hub to the live engine: the WebSocket route, and Kafka when configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from compat_api.context import AppContext
from engine_live.errors import IngestError
from ingestion.kafka_source import KafkaFrameSource, KafkaSourceSettings
from stream_hub.kafka_sink import KafkaEventSink, KafkaSinkSettings
from stream_hub.ws_endpoint import StreamSettings, serve_stream

log = logging.getLogger("flowtime.stream")
router = APIRouter()


class LiveLookup:
    """The live service as the stream endpoint's RunLookup."""

    def __init__(self, live: Any) -> None:
        self.live = live

    def exists(self, run_id: str) -> bool:
        return bool(self.live is not None and self.live.knows(run_id))

    def snapshot_state(self, run_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self.live.state_live(run_id)
        return state

    def current(self, run_id: str) -> tuple[str, int]:
        run = self.live.handle(run_id).run
        return run.epoch, run.seq

    def progress(self, run_id: str) -> tuple[int | None, int]:
        run = self.live.handle(run_id).run
        return run.watermark, max(0, run.watermark - run.last_bin)


class ScopedAuth:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def check(self, token: str | None, scope: str, run_id: str) -> None:
        self.ctx.auth.check(token, scope, run_id)


@router.websocket("/v1/runs/{run_id}/stream")
async def stream(websocket: WebSocket, run_id: str) -> None:
    ctx: AppContext = websocket.app.state.ctx
    hub = ctx.extras["hub"]
    s = ctx.settings
    settings = StreamSettings(
        heartbeat_s=s.heartbeat_seconds,
        max_message_bytes=s.max_ws_message_bytes,
        auth_timeout_s=s.ws_auth_timeout_seconds,
    )
    auth = ScopedAuth(ctx) if ctx.auth.enabled else None
    await serve_stream(websocket, run_id, hub, LiveLookup(ctx.live), auth, settings)


class KafkaWiring:
    """Events to `flowtime.events`, frames from `flowtime.telemetry` (SPEC §7), when configured."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.sink: KafkaEventSink | None = None
        self.source: KafkaFrameSource | None = None
        self._source_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s, live = self.ctx.settings, self.ctx.live
        if not s.kafka_bootstrap:
            return
        sink_settings = KafkaSinkSettings(
            bootstrap=s.kafka_bootstrap, topic=s.kafka_events_topic, enable_idempotence=s.kafka_idempotence
        )
        self.sink = KafkaEventSink(self.ctx.extras["hub"], sink_settings)
        self.resend_history(self.sink)
        await self.sink.start()  # attaches its hub listener before its first await: no event in between
        self.source = KafkaFrameSource(
            KafkaSourceSettings(
                bootstrap=s.kafka_bootstrap,
                topic=s.kafka_telemetry_topic,
                group=s.kafka_group,
                enable_idempotence=s.kafka_idempotence,
            ),
            self.ingest,
            self.wait_capacity,
            skip_until=live.kafka_offsets(),
        )
        # Joining the consumer group must not hold up readiness, nor fail start-up while the broker is down.
        self._source_task = asyncio.create_task(self._start_source(self.source), name="kafka-source-start")

    async def _start_source(self, source: KafkaFrameSource) -> None:
        delay = 0.5
        while True:
            try:
                await source.start()
                return
            except Exception as exc:
                log.warning("kafka source cannot start yet (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def resend_history(self, sink: KafkaEventSink) -> None:
        """Hand the sink every seq'd event the hub holds after recovery, before any new one.

        A sink's progress lives in memory: events published just before a crash may never have
        reached the broker, and recovery republished them to the hub before this sink existed. So
        every recovered run's history is sent again (at-least-once; consumers deduplicate by
        (runId, epoch, seq)). Events beyond the sink's buffer make it fall behind and catch up
        from history as usual.
        """
        hub, live = self.ctx.extras["hub"], self.ctx.live
        for run_id in sorted(live.runs):
            head = hub.head(run_id)
            if head is None or head[1] == 0:
                continue
            epoch, seq = head
            read = hub.read_after(run_id, epoch, 0, seq)  # `lost` = what history no longer holds: fine
            for ev in read.events:
                sink.on_event(run_id, ev)
        log.info("kafka sink: re-sending recovered history", extra={"runs": len(live.runs)})

    async def ingest(self, run_id: str, frame: bytes, partition: int, offset: int) -> None:
        live = self.ctx.live
        if live is None or not live.knows(run_id):
            raise IngestError(f"unknown live run '{run_id}'", code="unknown_run", runId=run_id)
        await live.ingest(run_id, frame, source=(partition, offset))

    async def wait_capacity(self) -> None:
        live = self.ctx.live
        while live.queued_frames >= self.ctx.settings.ingest_queue_frames:
            live.drained.clear()
            await live.drained.wait()

    async def stop(self) -> None:
        if self._source_task is not None and not self._source_task.done():
            self._source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._source_task
        if self.source is not None:
            await self.source.stop()
        if self.sink is not None:
            await self.sink.stop()
