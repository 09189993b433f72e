"""Kafka frame source: a consumer group on `flowtime.telemetry` (key runId, value one frame JSON).

Each record is handed to an injected `ingest(run_id, frame_bytes, partition, offset)` coroutine:
- `BackpressureError` → every assigned partition is paused, the source waits for the injected
  `capacity_available()` and retries the same record (nothing is skipped, order is kept);
- `StorageUnavailableError` (a full disk: the record was not logged) → the same, waiting
  `storage_retry_s` between tries, so a storage outage never dead-letters good records;
- `IngestError`, a value that is not JSON, or a record without a run id → the record goes to
  `flowtime.telemetry.dlq` (same key and value; headers `error`, `error-message`, `source-topic`,
  `source-partition`, `source-offset`) and is counted; an unexpected exception is logged and
  dead-lettered as `internal_error`, so a bad record never stops the consumer;
- records at or below `skip_until[partition]` (offsets already in the ingestion log) are skipped.
Per partition the group commits the offset after the last handled record (ingested, dead-lettered
or skipped), i.e. the lowest offset not yet handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from engine_live.errors import BackpressureError, IngestError, StorageUnavailableError

__all__ = ["CapacityWait", "IngestCallback", "KafkaFrameSource", "KafkaSourceSettings", "KafkaSourceStats"]

log = logging.getLogger("flowtime.kafka_source")

IngestCallback = Callable[[str, bytes, int, int], Awaitable[None]]
CapacityWait = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class KafkaSourceSettings:
    """Broker, topics, consumer group and polling settings of the Kafka frame source."""

    bootstrap: str = "127.0.0.1:9092"
    topic: str = "flowtime.telemetry"
    dlq_topic: str = "flowtime.telemetry.dlq"
    group: str = "flowtime-engine"
    enable_idempotence: bool = True
    max_records: int = 500
    poll_timeout_ms: int = 200
    retry_backoff_s: float = 0.5
    storage_retry_s: float = 1.0  # between tries of a record storage refused (503 storage_unavailable)


@dataclass(frozen=True, slots=True)
class KafkaSourceStats:
    """The source's counters, and whether its partitions are paused for backpressure."""

    ingested: int
    skipped: int
    dead_lettered: int
    backpressure_waits: int
    paused: bool


class KafkaFrameSource:
    """Hands each record of the telemetry topic to `ingest` in order (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSourceSettings,
        ingest: IngestCallback,
        capacity_available: CapacityWait,
        *,
        skip_until: Mapping[int, int] | None = None,
    ) -> None:
        self.settings = settings
        self._ingest = ingest
        self._capacity_available = capacity_available
        self._skip_until = dict(skip_until or {})
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._done: dict[TopicPartition, int] = {}  # next offset to commit
        self._ingested = self._skipped = self._dead = self._waits = 0
        self._paused = False

    async def start(self) -> None:
        """Start the consumer and the dead-letter producer, then the consume loop as a task."""
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            s.topic,
            bootstrap_servers=s.bootstrap,
            group_id=s.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._dlq = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all", enable_idempotence=s.enable_idempotence)
        await self._consumer.start()
        await self._dlq.start()
        self._task = asyncio.create_task(self._run(), name="kafka-frame-source")

    async def stop(self) -> None:
        """Cancel the consume loop, commit the handled offsets (best effort), stop consumer and producer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit()
            await self._consumer.stop()
        if self._dlq is not None:
            await self._dlq.stop()

    def stats(self) -> KafkaSourceStats:
        """Counts of frames ingested, skipped, dead-lettered, and of waits for queue room."""
        return KafkaSourceStats(self._ingested, self._skipped, self._dead, self._waits, self._paused)

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition that delivered a record since start-up: the last known high
        watermark minus the next offset this source hands over (empty before start or after stop)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        try:
            assigned = list(consumer.assignment())
        except Exception:  # not started, or stopped
            return {}
        out: dict[tuple[str, int], int] = {}
        for tp in assigned:
            position, high = self._done.get(tp), consumer.highwater(tp)
            if position is not None and high is not None:
                out[(str(tp.topic), int(tp.partition))] = max(0, int(high) - int(position))
        return out

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_records
                )
                for tp, records in batches.items():
                    for record in records:
                        await self._handle(tp, record)
                        self._done[tp] = record.offset + 1
                if batches:
                    await self._commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kafka source: poll or commit failed; retrying")
                await asyncio.sleep(self.settings.retry_backoff_s)

    async def _commit(self) -> None:
        if self._consumer is not None and self._done:
            await self._consumer.commit(dict(self._done))

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> None:
        if record.offset <= self._skip_until.get(tp.partition, -1):
            self._skipped += 1
            return
        value: bytes = record.value or b""
        try:
            frame = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            await self._dead_letter(tp, record, "invalid_json", str(exc))
            return
        run_id = record.key.decode() if record.key else None
        if run_id is None and isinstance(frame, dict) and isinstance(frame.get("runId"), str):
            run_id = frame["runId"]
        if run_id is None:
            await self._dead_letter(tp, record, "missing_run_id", "record has no key and no runId")
            return
        while True:
            try:
                await self._ingest(run_id, value, tp.partition, record.offset)
            except BackpressureError:
                await self._wait_for_capacity()
                continue
            except StorageUnavailableError:
                await self._wait_for_capacity(self._storage_retry)
                continue
            except IngestError as exc:
                await self._dead_letter(tp, record, exc.code, exc.message)
            except Exception as exc:
                log.exception("kafka source: ingest failed unexpectedly", extra={"runId": run_id})
                await self._dead_letter(tp, record, "internal_error", repr(exc))
            else:
                self._ingested += 1
            return

    async def _storage_retry(self) -> None:
        await asyncio.sleep(self.settings.storage_retry_s)

    async def _wait_for_capacity(self, wait: CapacityWait | None = None) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._waits += 1
        await self._commit()
        assigned = list(consumer.assignment())
        consumer.pause(*assigned)
        self._paused = True
        try:
            await (wait or self._capacity_available)()
        finally:
            consumer.resume(*[tp for tp in assigned if tp in consumer.assignment()])
            self._paused = False

    async def _dead_letter(self, tp: TopicPartition, record: ConsumerRecord[Any, Any], code: str, message: str) -> None:
        headers = [
            ("error", code.encode()),
            ("error-message", message.encode()[:1024]),
            ("source-topic", tp.topic.encode()),
            ("source-partition", str(tp.partition).encode()),
            ("source-offset", str(record.offset).encode()),
        ]
        while True:
            try:
                assert self._dlq is not None
                await self._dlq.send_and_wait(self.settings.dlq_topic, record.value, key=record.key, headers=headers)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kafka source: DLQ produce failed; retrying")
                await asyncio.sleep(self.settings.retry_backoff_s)
        self._dead += 1
        log.warning(
            "kafka source: record dead-lettered",
            extra={"partition": tp.partition, "offset": record.offset, "error": code},
        )
