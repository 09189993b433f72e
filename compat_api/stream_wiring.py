"""Wiring the stream hub to the live engine: the WebSocket route, and Kafka when configured."""

from __future__ import annotations

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
    settings = StreamSettings(heartbeat_s=s.heartbeat_seconds, max_message_bytes=s.max_ws_message_bytes)
    auth = ScopedAuth(ctx) if ctx.auth.enabled else None
    await serve_stream(websocket, run_id, hub, LiveLookup(ctx.live), auth, settings)


class KafkaWiring:
    """Events to `flowtime.events`, frames from `flowtime.telemetry` (SPEC §7), when configured."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.sink: KafkaEventSink | None = None
        self.source: KafkaFrameSource | None = None

    async def start(self) -> None:
        s, live = self.ctx.settings, self.ctx.live
        if not s.kafka_bootstrap:
            return
        self.sink = KafkaEventSink(self.ctx.extras["hub"], KafkaSinkSettings(
            bootstrap=s.kafka_bootstrap, topic=s.kafka_events_topic, enable_idempotence=s.kafka_idempotence))  # fmt: skip
        await self.sink.start()
        self.source = KafkaFrameSource(
            KafkaSourceSettings(bootstrap=s.kafka_bootstrap, topic=s.kafka_telemetry_topic, group=s.kafka_group,
                                enable_idempotence=s.kafka_idempotence),
            self.ingest, self.wait_capacity, skip_until=live.kafka_offsets(),
        )  # fmt: skip
        await self.source.start()

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
        if self.source is not None:
            await self.source.stop()
        if self.sink is not None:
            await self.sink.stop()
