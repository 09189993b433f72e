"""Kafka sink buffering, outage and catch-up from hub history, with the in-memory producer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from stream_hub.hub import Hub, HubLimits
from stream_hub.kafka_sink import KafkaEventSink, KafkaSinkSettings, MemoryEventProducer

RUN = "r1"


def publish(hub: Hub, seqs: range, run_id: str = RUN) -> None:
    for s in seqs:
        ev: dict[str, Any] = {
            "v": 1,
            "type": "run_update",
            "runId": run_id,
            "epoch": "e1",
            "seq": s,
            "binIndex": s,
        }
        hub.publish(run_id, ev, orjson.dumps(ev))


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def delivered(producer: MemoryEventProducer, run_id: str = RUN) -> list[int]:
    """Seqs on the topic for a run, first occurrences only (consumers deduplicate)."""
    out: list[int] = []
    for topic, rec in producer.records:
        assert topic == "flowtime.events"
        if rec.key == run_id.encode():
            seq = int(dict(rec.headers)["seq"])
            assert orjson.loads(rec.value)["seq"] == seq and dict(rec.headers)["epoch"] == b"e1"
            if seq not in out:
                out.append(seq)
    return out


def make(max_buffer: int, history: int = 10_000) -> tuple[Hub, MemoryEventProducer, KafkaEventSink]:
    hub = Hub(HubLimits(history_events=history))
    producer = MemoryEventProducer()
    settings = KafkaSinkSettings(max_buffer=max_buffer, batch_size=4, retry_backoff_s=0.01, max_backoff_s=0.02)
    return hub, producer, KafkaEventSink(hub, settings, producer)


async def test_events_reach_the_topic_in_order_with_key_and_headers() -> None:
    hub, producer, sink = make(max_buffer=100)
    await sink.start()
    publish(hub, range(1, 21))
    publish(hub, range(1, 6), run_id="r2")
    await eventually(lambda: sink.stats().sent == 25)
    assert delivered(producer) == list(range(1, 21)) and delivered(producer, "r2") == [1, 2, 3, 4, 5]
    await sink.stop()


async def test_outage_overflow_then_catch_up_from_history() -> None:
    hub, producer, sink = make(max_buffer=10)
    producer.down = True
    await sink.start()
    publish(hub, range(1, 51))  # never blocks although nothing can be sent
    assert sink.stats().degraded and sink.stats().buffered == 10 and sink.stats().behind_runs == 1
    await eventually(lambda: sink.stats().send_failures >= 2)  # it keeps trying
    producer.down = False
    await eventually(lambda: delivered(producer) == list(range(1, 51)))
    publish(hub, range(51, 56))
    await eventually(lambda: delivered(producer) == list(range(1, 56)))
    stats = sink.stats()
    assert not stats.degraded and stats.lost == 0 and stats.send_failures >= 1
    await sink.stop()


async def test_events_gone_from_history_are_counted_lost_and_the_sink_continues() -> None:
    hub, producer, sink = make(max_buffer=5, history=10)
    producer.down = True
    await sink.start()
    publish(hub, range(1, 31))  # buffer holds 1..5; history holds 21..30
    producer.down = False
    await eventually(lambda: delivered(producer)[-1:] == [30])
    assert delivered(producer) == [*range(1, 6), *range(21, 31)]
    assert sink.stats().lost == 15
    await sink.stop()
