"""`/metrics` of a real `flowtime serve` after a live run (SPEC §11, issue 7 "Must show").

One scenario against a subprocess server: create a live run, follow it with a WebSocket client,
ingest bins over HTTP, take a snapshot, restart the server (recovery), close the run. At each step
the scrape must expose every metric documented in `docs/operations.md` with values that match what
the test did: frames counted = frames sent, bins behind ≥ 0, a latency histogram with observations,
the WebSocket clients gauge equal to the connected clients, snapshot size/age/duration after a
snapshot, recovery progress after a restart, runs by status.
(The snapshot is the periodic one.)
With a Tansu broker: frames consumed from Kafka are counted, every event reaches the Kafka sink, and
the consumer lag gauge drains to 0.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from server_proc import ServerProcess
from websockets.asyncio.client import ClientConnection, connect

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
RUN = "metrics-run"
MODEL = """\
grid: {binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: arr, kind: const, source: telemetry}
  - {id: cap, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(arr, cap)"}
topology:
  nodes:
    - {id: Svc, kind: service, semantics: {arrivals: arr, served: served, capacity: cap}}
  edges: []
"""
TIMEOUT_S = 20.0
SNAPSHOT_EVERY = 10  # a snapshot after bin 9; bins 10.. are replayed from the log after a crash
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def documented_metrics() -> set[str]:
    """Metric names of the table in docs/operations.md."""
    names: set[str] = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]
        if len(cells) > 4 and re.fullmatch(r"`flowtime_\w+`", cells[1]):
            names.add(cells[1].strip("`"))
    return names


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: Samples = {}
        self.families: set[str] = set()
        for fam in text_string_to_metric_families(text):
            self.families.add(fam.name)
            for s in fam.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value
        # a labelled family with no series yet (Kafka lag without Kafka) still has its TYPE line
        self.families |= {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        v = self.get(name, **labels)
        assert v is not None, f"no sample {name}{labels} in:\n{self.text}"
        return v


def scrape(client: httpx.Client) -> Scrape:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


def wait_scrape(client: httpx.Client, ok: Callable[[Scrape], bool], what: str) -> Scrape:
    """Scrape until `ok` holds (bounded polling): values read at scrape time settle asynchronously."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        s = scrape(client)
        if ok(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last scrape:\n{s.text}")
        time.sleep(0.05)


def bin_frames(b: int) -> list[dict[str, Any]]:
    return [{"bin": b, "series": "arr", "value": 10.0 + b}, {"bin": b, "series": "cap", "value": 12.0}]


async def recv_until(ws: ClientConnection, ok: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            msg = orjson.loads(await ws.recv())
            seen.append(msg)
            if ok(msg):
                return seen


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "data") as proc:
        yield proc


def test_metrics_after_a_live_run(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        first = scrape(client)
        missing = documented_metrics() - first.families
        assert not missing, f"documented but not exposed: {sorted(missing)}"
        assert first.value("flowtime_ingest_queue_capacity") > 0
        assert first.value("flowtime_ingest_queue_depth") == 0
        assert first.value("flowtime_websocket_clients") == 0

        body = {
            "mode": "live",
            "model": MODEL,
            "options": {"runId": RUN, "graceBins": 0, "snapshotEveryBins": SNAPSHOT_EVERY},
        }
        r = client.post("/v1/runs", json=body)
        assert r.status_code == 202, r.text

        sent_frames, bins = asyncio.run(feed_with_a_client(server, client, range(0, 12)))
        s = scrape(client)
        assert s.value("flowtime_ingested_frames_total", run_id=RUN) == sent_frames
        assert s.value("flowtime_ingested_bins_total", run_id=RUN) >= bins
        assert s.value("flowtime_bins_behind", run_id=RUN) >= 0
        assert s.value("flowtime_ingest_queue_depth") == 0
        assert s.value("flowtime_ingest_to_publish_seconds_count") >= bins
        assert 0 < s.value("flowtime_ingest_to_publish_seconds_sum") < TIMEOUT_S * bins
        seqd = s.value("flowtime_events_published_total", sink="websocket")
        assert seqd >= bins + 1  # the run's status event and one run_update per bin at least
        assert s.value("flowtime_events_published_total", sink="log") == seqd  # every seq'd event is logged
        assert s.value("flowtime_events_published_total", sink="kafka") == 0
        assert s.value("flowtime_live_runs", status="live") == 1
        assert s.value("flowtime_recovery_runs", state="todo") == 0

        # the periodic snapshot (snapshotEveryBins) commits in a thread: poll for it
        s = wait_scrape(
            client, lambda s: s.get("flowtime_snapshot_size_bytes", run_id=RUN) is not None, "the snapshot metrics"
        )
        assert s.value("flowtime_snapshot_size_bytes", run_id=RUN) > 0
        assert 0 <= s.value("flowtime_snapshot_age_seconds", run_id=RUN) < TIMEOUT_S
        assert s.value("flowtime_snapshot_duration_seconds_count") >= 1

        # bins after the snapshot, then a crash: recovery replays them from the ingestion log
        for b in range(12, 16):
            assert client.post(f"/v1/runs/{RUN}/bins", json=bin_frames(b)).status_code == 202
        server.kill()
        server.start()
        s = scrape(client)
        assert s.value("flowtime_recovery_runs", state="done") == 1
        assert s.value("flowtime_recovery_runs", state="todo") == 0
        assert s.value("flowtime_recovery_bins", state="done") >= 4
        assert s.value("flowtime_recovery_bins", state="todo") == 0
        assert s.get("flowtime_ingested_frames_total", run_id=RUN) in (None, 0)  # replay is not ingest
        assert s.value("flowtime_live_runs", status="live") == 1

        r = client.post(f"/v1/runs/{RUN}/close")
        assert r.status_code in (200, 202), r.text
        s = wait_scrape(client, lambda s: s.get("flowtime_live_runs", status="completed") == 1, "a completed run")
        assert s.value("flowtime_live_runs", status="live") == 0
        assert s.value("flowtime_bins_behind", run_id=RUN) == 0


async def feed_with_a_client(server: ServerProcess, client: httpx.Client, bins: range) -> tuple[int, int]:
    """Ingest `bins` over HTTP while one WebSocket client follows the run; returns (frames, bins)."""
    url = f"{server.ws_url}/v1/runs/{RUN}/stream"
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "since": None}).decode())
        await recv_until(ws, lambda m: m.get("type") == "subscribed")
        s = await asyncio.to_thread(
            wait_scrape, client, lambda s: s.get("flowtime_websocket_clients") == 1, "one WebSocket client"
        )
        assert s.value("flowtime_websocket_clients") == 1
        async with connect(url) as second:
            await second.send(orjson.dumps({"type": "subscribe", "since": None}).decode())
            await recv_until(second, lambda m: m.get("type") == "subscribed")
            await asyncio.to_thread(
                wait_scrape, client, lambda s: s.get("flowtime_websocket_clients") == 2, "two WebSocket clients"
            )
        await asyncio.to_thread(
            wait_scrape, client, lambda s: s.get("flowtime_websocket_clients") == 1, "the second client gone"
        )
        sent = 0
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as http:
            for b in bins:
                frames = bin_frames(b)
                r = await http.post(f"/v1/runs/{RUN}/bins", json=frames)
                assert r.status_code == 202, r.text
                sent += len(frames)
        last = bins[-1]
        await recv_until(ws, lambda m: m.get("type") == "run_update" and m.get("binIndex") == last)
    await asyncio.to_thread(
        wait_scrape, client, lambda s: s.get("flowtime_websocket_clients") == 0, "no WebSocket client"
    )
    return sent, len(bins)


EVENTS_TOPIC, TELEMETRY_TOPIC, DLQ_TOPIC = "flowtime.events", "flowtime.telemetry", "flowtime.telemetry.dlq"


async def create_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in (TELEMETRY_TOPIC, EVENTS_TOPIC, DLQ_TOPIC)])
    finally:
        await admin.close()


async def produce(bootstrap: str, frames: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for f in frames:
            await producer.send_and_wait(TELEMETRY_TOPIC, orjson.dumps(f), key=RUN.encode())
    finally:
        await producer.stop()


@pytest.mark.slow
def test_kafka_metrics(tansu_broker: Any, tmp_path: Path) -> None:
    """With Kafka: frames from the telemetry topic are counted, events sent to Kafka, the lag drains to 0."""
    env = {"FLOWTIME_KAFKA_BOOTSTRAP": tansu_broker.bootstrap, "FLOWTIME_KAFKA_IDEMPOTENCE": "false"}
    frames = [f for b in range(8) for f in bin_frames(b)]
    asyncio.run(create_topics(tansu_broker.bootstrap))
    with ServerProcess(tmp_path / "data", env=env) as server, httpx.Client(base_url=server.base_url) as client:
        body = {"mode": "live", "model": MODEL, "options": {"runId": RUN, "graceBins": 0}}
        assert client.post("/v1/runs", json=body).status_code == 202
        asyncio.run(produce(tansu_broker.bootstrap, frames))

        def settled(s: Scrape) -> bool:
            lag = s.get("flowtime_kafka_consumer_lag", topic=TELEMETRY_TOPIC, partition="0")
            to_kafka = s.get("flowtime_events_published_total", sink="kafka") or 0
            to_hub = s.get("flowtime_events_published_total", sink="websocket") or 0
            return (
                s.get("flowtime_ingested_frames_total", run_id=RUN) == len(frames)
                and lag == 0
                and to_kafka == to_hub > 0
            )

        s = wait_scrape(client, settled, "Kafka frames ingested, every event sent to Kafka, consumer lag 0")
        assert s.value("flowtime_bins_behind", run_id=RUN) >= 0
