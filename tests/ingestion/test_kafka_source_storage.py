"""The Kafka source on failing storage (issue 12 #1): a record the service could not log (503
`storage_unavailable`) is retried with the partitions paused — never dead-lettered — and ingested
once writes succeed. The consumer is a stand-in (no broker): `_handle` is the unit under test."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from engine_live.errors import StorageUnavailableError
from ingestion.kafka_source import KafkaFrameSource, KafkaSourceSettings


class FakeConsumer:
    def __init__(self, tp: TopicPartition) -> None:
        self.assigned = {tp}
        self.paused: list[TopicPartition] = []
        self.pauses = 0

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.pauses += 1
        self.paused = list(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused = [tp for tp in self.paused if tp not in tps]

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        pass


async def test_a_record_storage_refused_is_retried_not_dead_lettered() -> None:
    tp = TopicPartition("flowtime.telemetry", 0)
    calls: list[tuple[str, int]] = []

    async def ingest(run_id: str, value: bytes, partition: int, offset: int) -> None:
        calls.append((run_id, offset))
        if len(calls) <= 2:
            raise StorageUnavailableError("ingestion log write failed: [Errno 28] No space left on device")

    async def capacity() -> None:
        raise AssertionError("a storage failure is not backpressure")

    source = KafkaFrameSource(KafkaSourceSettings(storage_retry_s=0.0), ingest, capacity)
    consumer = FakeConsumer(tp)
    source._consumer = consumer  # type: ignore[assignment]
    record: ConsumerRecord[Any, Any] = ConsumerRecord(
        tp.topic, 0, 7, 0, 0, b"r1", b'{"bin": 0, "series": "x", "value": 1}', None, 2, 38, ()
    )
    await source._handle(tp, record)
    stats = source.stats()
    assert calls == [("r1", 7)] * 3 and stats.ingested == 1 and stats.dead_lettered == 0
    assert consumer.pauses == 2 and consumer.paused == [] and not stats.paused
