"""Kafka, when configured (SPEC §7): events to `flowtime.events`, frames from `flowtime.telemetry`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from compat_api.live_api import LiveApi
from compat_api.settings import Settings
from engine_live.errors import IngestError
from ingestion.kafka_source import KafkaFrameSource, KafkaSourceSettings
from stream_hub.hub import Hub
from stream_hub.kafka_sink import KafkaEventSink, KafkaSinkSettings

log = logging.getLogger("flowtime.stream")


class KafkaWiring:
    """Events to `flowtime.events`, frames from `flowtime.telemetry` (SPEC §7), when configured."""

    def __init__(self, settings: Settings, live: LiveApi, hub: Hub) -> None:
        self.settings, self.live, self.hub = settings, live, hub
        self.sink: KafkaEventSink | None = None
        self.source: KafkaFrameSource | None = None
        self._source_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """When Kafka is configured: re-send recovered history to a new event sink and start it, then start
        the frame source in the background (retrying while the broker is down)."""
        s, live = self.settings, self.live
        if not s.kafka_bootstrap:
            return
        sink_settings = KafkaSinkSettings(
            bootstrap=s.kafka_bootstrap, topic=s.kafka_events_topic, enable_idempotence=s.kafka_idempotence
        )
        self.sink = KafkaEventSink(self.hub, sink_settings)
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
            live.service.queue.wait_for_room,
            skip_until=live.service.kafka_offsets(),
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
        hub, runs = self.hub, self.live.service.runs
        for run_id in sorted(runs):
            head = hub.head(run_id)
            if head is None or head[1] == 0:
                continue
            epoch, seq = head
            read = hub.read_after(run_id, epoch, 0, seq)  # `lost` = what history no longer holds: fine
            for ev in read.events:
                sink.on_event(run_id, ev)
        log.info("kafka sink: re-sending recovered history", extra={"runs": len(runs)})

    async def ingest(self, run_id: str, frame: bytes, partition: int, offset: int) -> None:
        """One frame from the telemetry topic into its run (unknown runs go to the dead-letter topic)."""
        if not self.live.knows(run_id):
            raise IngestError(f"unknown live run '{run_id}'", code="unknown_run", runId=run_id)
        await self.live.ingest(run_id, frame, source=(partition, offset))

    async def stop(self) -> None:
        """Stop the frame source (or its pending start), then the event sink."""
        if self._source_task is not None and not self._source_task.done():
            self._source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._source_task
        if self.source is not None:
            await self.source.stop()
        if self.sink is not None:
            await self.sink.stop()
