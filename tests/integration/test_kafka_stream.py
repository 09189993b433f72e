"""Kafka sink and frame source against a real (Tansu) broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine_live.errors import BackpressureError, IngestError
from ingestion.kafka_source import KafkaFrameSource, KafkaSourceSettings
from stream_hub.hub import Hub
from stream_hub.kafka_sink import KafkaEventSink, KafkaSinkSettings

pytestmark = pytest.mark.integration
EVENTS, TELEMETRY, DLQ = "flowtime.events", "flowtime.telemetry", "flowtime.telemetry.dlq"


async def create_topics(bootstrap: str, *names: str, partitions: int = 2) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout_s: float = 20) -> list[Any]:
    """Every record of the topic from the beginning, until `done(records)` (bounded)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not (parts := consumer.partitions_for_topic(topic)):
                await consumer.topics()  # refreshes metadata
                await asyncio.sleep(0.05)
            consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
            while not done(records):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def publish(hub: Hub, seqs: range, run_id: str = "r1") -> None:
    for s in seqs:
        ev = {"v": 1, "type": "run_update", "runId": run_id, "epoch": "e1", "seq": s, "binIndex": s}
        hub.publish(run_id, ev, orjson.dumps(ev))


def first_seqs(records: list[Any], run_id: str = "r1") -> list[int]:
    """Seqs in topic order, first occurrences only (consumers deduplicate by (runId, epoch, seq))."""
    out: list[int] = []
    for r in records:
        if r.key == run_id.encode():
            headers = dict(r.headers)
            assert headers["epoch"] == b"e1" and int(headers["seq"]) == orjson.loads(r.value)["seq"]
            if int(headers["seq"]) not in out:
                out.append(int(headers["seq"]))
    return out


def sink_settings(bootstrap: str, max_buffer: int = 10_000) -> KafkaSinkSettings:
    return KafkaSinkSettings(
        bootstrap=bootstrap,
        enable_idempotence=False,  # Tansu does not implement InitProducerId
        request_timeout_ms=2_000,
        send_timeout_s=3.0,
        max_buffer=max_buffer,
        batch_size=50,
        retry_backoff_s=0.1,
        max_backoff_s=0.5,
    )


async def test_hub_events_reach_the_topic_in_order(tansu_broker: Any) -> None:
    await create_topics(tansu_broker.bootstrap, EVENTS)
    hub = Hub()
    sink = KafkaEventSink(hub, sink_settings(tansu_broker.bootstrap))
    await sink.start()
    try:
        publish(hub, range(1, 101))
        publish(hub, range(1, 31), run_id="r2")
        records = await read_topic(
            tansu_broker.bootstrap,
            EVENTS,
            lambda rs: len(first_seqs(rs)) >= 100 and len(first_seqs(rs, "r2")) >= 30,
        )
    finally:
        await sink.stop()
    assert first_seqs(records) == list(range(1, 101)) and first_seqs(records, "r2") == list(range(1, 31))
    assert len({r.partition for r in records if r.key == b"r1"}) == 1  # key = runId keeps a run together


@pytest.mark.slow
async def test_broker_outage_never_blocks_and_the_sink_catches_up(tansu_broker: Any) -> None:
    await create_topics(tansu_broker.bootstrap, EVENTS)
    hub = Hub()
    watcher = hub.subscribe("r1", None, None)  # the hub keeps serving clients during the outage
    sink = KafkaEventSink(hub, sink_settings(tansu_broker.bootstrap, max_buffer=20))
    await sink.start()
    try:
        publish(hub, range(1, 21))
        await read_topic(tansu_broker.bootstrap, EVENTS, lambda rs: len(first_seqs(rs)) >= 20)
        tansu_broker.stop()  # the in-memory broker loses the topic: only events from here on can be checked
        worst = 0.0
        for s in range(21, 201):
            t0 = time.perf_counter()
            publish(hub, range(s, s + 1))
            worst = max(worst, time.perf_counter() - t0)
            if s % 20 == 0:
                await asyncio.sleep(0.05)  # let the sink try (and fail) meanwhile
        assert sink.stats().degraded and sink.stats().behind_runs == 1
        print(f"\nslowest publish during the outage: {worst * 1e6:.0f} µs; sink {sink.stats()}")
        tansu_broker.start()
        await create_topics(tansu_broker.bootstrap, EVENTS)
        publish(hub, range(201, 211))
        records = await read_topic(
            tansu_broker.bootstrap, EVENTS, lambda rs: first_seqs(rs)[-1:] == [210], timeout_s=40
        )
        seqs = [s for s in first_seqs(records) if s > 20]
        assert seqs == list(range(21, 211))
        assert sink.stats().lost == 0
        got = []
        while (item := watcher.poll()) is not None:
            got.append(item)
        assert len(got) == 210
    finally:
        await sink.stop()


@pytest.mark.slow
async def test_frames_reach_the_callback_and_bad_records_go_to_the_dlq(tansu_broker: Any) -> None:
    bootstrap = tansu_broker.bootstrap
    await create_topics(bootstrap, TELEMETRY, DLQ, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    values = [orjson.dumps({"runId": "r1", "bin": b, "series": "s", "value": b}) for b in range(4)]
    values[1] = b"not json"
    values[2] = orjson.dumps({"runId": "r1", "bin": 99, "series": "s", "value": 1})  # the engine rejects it
    for v in [*values, orjson.dumps({"runId": "r1", "bin": 4, "series": "s", "value": 4})]:
        await producer.send_and_wait(TELEMETRY, v, key=b"r1")
    await producer.stop()

    got: list[tuple[str, int, int]] = []
    capacity = asyncio.Event()
    pushed_back = False

    async def ingest(run_id: str, frame: bytes, partition: int, offset: int) -> None:
        nonlocal pushed_back
        body = orjson.loads(frame)
        if body["bin"] == 99:
            raise IngestError("bin beyond the grid", code="invalid_frame")
        if body["bin"] == 3 and not pushed_back:
            pushed_back = True
            raise BackpressureError("ingest queue full")
        got.append((run_id, body["bin"], offset))

    async def capacity_available() -> None:
        await capacity.wait()

    settings = KafkaSourceSettings(bootstrap=bootstrap, group="g-test", enable_idempotence=False)
    source = KafkaFrameSource(settings, ingest, capacity_available, skip_until={0: 0})  # offset 0 is logged
    await source.start()
    try:
        async with asyncio.timeout(20):
            while not source.stats().paused:
                await asyncio.sleep(0.02)
        assert got == []  # bin 3 is waiting for capacity; bins 1 and 2 went to the DLQ
        capacity.set()
        async with asyncio.timeout(20):
            while len(got) < 2:
                await asyncio.sleep(0.02)
        assert got == [("r1", 3, 3), ("r1", 4, 4)]
        stats = source.stats()
        assert (stats.skipped, stats.dead_lettered, stats.backpressure_waits) == (1, 2, 1)
    finally:
        await source.stop()
    dlq = await read_topic(bootstrap, DLQ, lambda rs: len(rs) >= 2)
    assert [(r.value, dict(r.headers)["error"], dict(r.headers)["source-offset"]) for r in dlq] == [
        (b"not json", b"invalid_json", b"1"),
        (values[2], b"invalid_frame", b"2"),
    ]
    check = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="g-test")
    await check.start()
    try:
        assert await check.committed(TopicPartition(TELEMETRY, 0)) == 5
    finally:
        await check.stop()
