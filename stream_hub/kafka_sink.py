"""Kafka sink: every hub event goes to `flowtime.events` (key runId, headers epoch and seq).

The sink listens to the hub synchronously and only appends to a bounded buffer, so a slow or dead
broker never blocks the engine. One task sends the buffer in batches (acks=all) and keeps a batch
until the broker acknowledged it. When the buffer is full the sink stops buffering for the runs it
cannot take, marks itself degraded (log + `stats().degraded`) and keeps a cursor per run; once it
has room again it catches up from the hub history, in order, from where it left off. If history no
longer holds those events it logs loudly, counts them as lost, and continues with what is there.

Delivery is at-least-once: a batch that timed out is sent again, so consumers deduplicate by
(runId, epoch, seq). Unsequenced events (`snapshot_written`, `status`) are forwarded best effort;
`progress` heartbeats are not forwarded. Key and headers come from `engine_live.protocol.kafka_envelope`;
the value is the event's bytes as the publisher encoded them (never re-encoded here).
`enable_idempotence` is off for tests (the Tansu broker lacks InitProducerId) and on for Apache Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from engine_live.protocol import Cursor, EventType, kafka_envelope
from stream_hub.history import HubEvent
from stream_hub.hub import Hub

__all__ = [
    "AioKafkaEventProducer",
    "EventProducer",
    "KafkaEventSink",
    "KafkaRecord",
    "KafkaSinkSettings",
    "KafkaSinkStats",
    "MemoryEventProducer",
]

log = logging.getLogger("flowtime.kafka_sink")


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One record for `flowtime.events`: key runId, the event bytes, headers epoch and seq."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class EventProducer(Protocol):
    """Where the sink sends records: aiokafka in the service, memory in tests."""

    async def start(self) -> None:
        """Connect; raise when the broker cannot be reached."""
        ...

    async def send_batch(self, topic: str, records: Sequence[KafkaRecord]) -> None:
        """Return once the broker acknowledged every record; raise otherwise."""
        ...

    async def stop(self) -> None:
        """Disconnect."""
        ...


@dataclass(frozen=True, slots=True)
class KafkaSinkSettings:
    """Broker, topic, batching, buffer bound and retry timings of the sink."""

    bootstrap: str = "127.0.0.1:9092"
    topic: str = "flowtime.events"
    enable_idempotence: bool = True
    linger_ms: int = 5
    request_timeout_ms: int = 10_000
    max_buffer: int = 10_000
    batch_size: int = 500
    send_timeout_s: float = 15.0
    retry_backoff_s: float = 0.5
    max_backoff_s: float = 5.0


@dataclass(frozen=True, slots=True)
class KafkaSinkStats:
    """What the sink reports to metrics; `degraded` while behind or while the broker is down."""

    sent: int
    buffered: int
    behind_runs: int
    lost: int
    send_failures: int
    degraded: bool


class AioKafkaEventProducer:
    """The real producer: aiokafka, acks=all, linger batching."""

    def __init__(self, settings: KafkaSinkSettings) -> None:
        self.settings = settings
        self._producer: object | None = None

    async def start(self) -> None:
        """Connect to the broker (the producer is stopped again if that fails)."""
        from aiokafka import AIOKafkaProducer

        s = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            acks="all",
            linger_ms=s.linger_ms,
            enable_idempotence=s.enable_idempotence,
            request_timeout_ms=s.request_timeout_ms,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def send_batch(self, topic: str, records: Sequence[KafkaRecord]) -> None:
        """Send the records and wait until the broker acknowledged all of them."""
        from aiokafka import AIOKafkaProducer

        producer = self._producer
        if not isinstance(producer, AIOKafkaProducer):
            raise RuntimeError("producer not started")
        futures = [await producer.send(topic, r.value, key=r.key, headers=r.headers) for r in records]
        await asyncio.gather(*futures)

    async def stop(self) -> None:
        """Flush and disconnect (no-op when not started)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # type: ignore[attr-defined]


@dataclass
class MemoryEventProducer:
    """In-memory producer for unit tests; set `down` to simulate a broker outage."""

    down: bool = False
    records: list[tuple[str, KafkaRecord]] = field(default_factory=list)

    async def start(self) -> None:
        """ConnectionError while `down`."""
        if self.down:
            raise ConnectionError("broker down")

    async def send_batch(self, topic: str, records: Sequence[KafkaRecord]) -> None:
        """Keep the records in `records`; ConnectionError while `down`."""
        if self.down:
            raise ConnectionError("broker down")
        self.records.extend((topic, r) for r in records)

    async def stop(self) -> None:
        """Nothing to release."""
        return None


class KafkaEventSink:
    """Forwards hub events to Kafka without ever blocking the hub (see the module docstring)."""

    def __init__(self, hub: Hub, settings: KafkaSinkSettings, producer: EventProducer | None = None) -> None:
        self.hub = hub
        self.settings = settings
        self.producer: EventProducer = producer or AioKafkaEventProducer(settings)
        self._pending: deque[tuple[str, HubEvent]] = deque()
        self._cursor: dict[str, Cursor] = {}  # last seq'd event buffered per run
        self._behind: set[str] = set()  # runs to catch up from history
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._outage = False
        self._sent = self._lost = self._failures = 0

    # -- hub side (synchronous) --------------------------------------------------------------------
    def on_event(self, run_id: str, ev: HubEvent) -> None:
        """The hub listener: buffer the event, or mark its run as behind when the buffer is full."""
        if not ev.seqd:
            if ev.type != EventType.PROGRESS and len(self._pending) < self.settings.max_buffer:
                self._pending.append((run_id, ev))
                self._wake.set()
            return
        if run_id in self._behind:
            return
        if len(self._pending) >= self.settings.max_buffer:
            self._behind.add(run_id)
            self._cursor.setdefault(run_id, Cursor(ev.epoch, ev.seq - 1))
            log.warning(
                "kafka sink degraded: buffer full, catching up from hub history later",
                extra={"runId": run_id, "seq": ev.seq},
            )
            return
        self._pending.append((run_id, ev))
        self._cursor[run_id] = Cursor(ev.epoch, ev.seq)
        self._wake.set()

    def _refill(self) -> None:
        """Move events of runs that fell behind from hub history into the buffer (no await)."""
        for run_id in sorted(self._behind):
            room = self.settings.max_buffer - len(self._pending)
            if room <= 0:
                return
            epoch, seq = self._cursor[run_id]
            read = self.hub.read_after(run_id, epoch, seq, room)
            if read.lost or read.epoch_changed:
                self._lost += read.lost
                log.error(
                    "kafka sink lost events: no longer in hub history",
                    extra={"runId": run_id, "afterSeq": seq, "lost": read.lost, "epochChanged": read.epoch_changed},
                )
            for ev in read.events:
                self._pending.append((run_id, ev))
                self._cursor[run_id] = Cursor(ev.epoch, ev.seq)
            head = self.hub.head(run_id)
            if head is None or self._cursor.get(run_id) == head or (read.epoch_changed and not read.events):
                self._behind.discard(run_id)
                if head is not None:
                    self._cursor[run_id] = head

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen to the hub and start the sending task."""
        self.hub.add_listener(self.on_event)
        self._task = asyncio.create_task(self._run(), name="kafka-event-sink")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop listening, give the buffer up to `drain_timeout_s` to drain, then stop the producer."""
        self.hub.remove_listener(self.on_event)
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout_s):
                    while (self._pending or self._behind) and not self._task.done():
                        await asyncio.sleep(0.05)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._started:
            await self.producer.stop()
            self._started = False

    def stats(self) -> KafkaSinkStats:
        """Counters and the degraded flag."""
        return KafkaSinkStats(
            sent=self._sent,
            buffered=len(self._pending),
            behind_runs=len(self._behind),
            lost=self._lost,
            send_failures=self._failures,
            degraded=bool(self._behind) or self._outage,
        )

    @staticmethod
    def _record(run_id: str, ev: HubEvent) -> KafkaRecord:
        key, headers = kafka_envelope(run_id, ev.epoch, ev.seq)
        return KafkaRecord(key, ev.data, headers)

    async def _run(self) -> None:
        backoff = self.settings.retry_backoff_s
        while True:
            try:
                if not self._started:
                    await self.producer.start()
                    self._started = True
                self._refill()
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = list(islice(self._pending, self.settings.batch_size))
                async with asyncio.timeout(self.settings.send_timeout_s):
                    await self.producer.send_batch(self.settings.topic, [self._record(*item) for item in batch])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                if not self._outage:
                    log.warning("kafka sink: broker unavailable, holding events", extra={"error": repr(exc)})
                self._outage = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_s)
                continue
            for _ in batch:
                self._pending.popleft()
            self._sent += len(batch)
            backoff = self.settings.retry_backoff_s
            if self._outage:
                log.warning("kafka sink: broker back, resuming")
                self._outage = False
