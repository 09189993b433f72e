"""WebSocket stream against a real uvicorn server and real `websockets` clients (SPEC §7)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from engine_live.errors import ForbiddenError, UnauthenticatedError
from stream_hub.hub import Hub, HubLimits
from stream_hub.ws_endpoint import StreamSettings, serve_stream

pytestmark = pytest.mark.integration
RUN = "r1"


class FakeEngine:
    """A RunLookup plus a publisher that keeps state and hub in step (both updated synchronously)."""

    def __init__(self, hub: Hub, epoch: str = "e1", pad: int = 0) -> None:
        self.hub, self.epoch, self.seq, self.last_bin, self.pad = hub, epoch, 0, -1, "x" * pad

    def exists(self, run_id: str) -> bool:
        return run_id == RUN

    def current(self, run_id: str) -> tuple[str, int]:
        return self.epoch, self.seq

    def progress(self, run_id: str) -> tuple[int | None, int]:
        return self.last_bin, 0

    def snapshot_state(self, run_id: str) -> dict[str, Any]:
        return {"runId": run_id, "epoch": self.epoch, "seq": self.seq, "lastBin": self.last_bin}

    def bin(self, b: int | None = None) -> None:
        """Publish one run_update (a new bin, or a re-evaluation of bin `b`) and a progress beat."""
        self.seq += 1
        if b is None:
            self.last_bin += 1
        ev = {"v": 1, "type": "run_update", "runId": RUN, "epoch": self.epoch, "seq": self.seq}
        ev |= {"binIndex": self.last_bin if b is None else b, "sentAt": time.perf_counter(), "pad": self.pad}
        ev["deltas"] = [{"nodeId": "A", "metrics": {}}, {"nodeId": "B", "metrics": {}}]
        self.hub.publish(RUN, ev, orjson.dumps(ev))
        beat = {"v": 1, "type": "progress", "runId": RUN, "epoch": self.epoch, "seq": self.seq}
        self.hub.publish(RUN, beat | {"watermark": self.last_bin, "lagBins": 0}, orjson.dumps(beat), seqd=False)


class TokenAuth:
    def check(self, token: str | None, scope: str, run_id: str) -> None:
        if token not in {"good", "other-run"}:
            raise UnauthenticatedError("bad token")
        if token == "other-run":
            raise ForbiddenError("not your run")


def make_app(hub: Hub, engine: FakeEngine, settings: StreamSettings, auth: TokenAuth | None = None) -> FastAPI:
    app = FastAPI()

    @app.websocket("/v1/runs/{run_id}/stream")
    async def stream(websocket: WebSocket, run_id: str) -> None:
        await serve_stream(websocket, run_id, hub, engine, auth, settings)

    return app


@pytest.fixture
async def served(uvicorn_server: Any) -> AsyncIterator[tuple[Hub, FakeEngine, str]]:
    hub = Hub(HubLimits(history_events=100))
    engine = FakeEngine(hub)
    async with uvicorn_server(make_app(hub, engine, StreamSettings(heartbeat_s=60))) as addr:
        yield hub, engine, addr


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        body: dict[str, Any] = orjson.loads(await ws.recv())
        return body


async def subscribe(ws: ClientConnection, since: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "subscribe", "since": since, "nodes": None} | extra).decode())
    return await recv(ws)


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a server-side condition with a bound (the server reacts on its own tasks)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def read_updates(ws: ClientConnection, until_seq: int, seen: list[int]) -> None:
    while not seen or seen[-1] < until_seq:
        msg = await recv(ws)
        if msg["type"] == "run_update":
            seen.append(msg["seq"])


async def test_reconnect_with_cursor_gets_every_seq_exactly_once(served: tuple[Hub, FakeEngine, str]) -> None:
    hub, engine, addr = served
    total = 400
    engine.bin()

    async def publisher() -> None:
        while engine.seq < total:
            engine.bin(b=engine.last_bin if engine.seq % 7 == 0 else None)  # some corrections
            await asyncio.sleep(0.0005)

    task = asyncio.create_task(publisher())
    seen: list[int] = []
    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream") as ws:
        first = await subscribe(ws)
        assert first["type"] == "subscribed" and first["recovered"] is True
        await read_updates(ws, 120, seen)
    # the query cursor is used because the subscribe message carries `since: null`
    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream?since=e1:{seen[-1]}") as ws:
        again = await subscribe(ws)
        assert again["recovered"] is True and again["seq"] >= seen[-1]
        await read_updates(ws, total, seen)
    await task
    assert seen == list(range(1, total + 1))
    await eventually(lambda: hub.stats().clients == 0)  # the server noticed both disconnects


async def test_message_cursor_wins_over_query(served: tuple[Hub, FakeEngine, str]) -> None:
    _, engine, addr = served
    for _ in range(10):
        engine.bin()
    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream?since=e1:2") as ws:
        assert (await subscribe(ws, {"epoch": "e1", "seq": 8}))["recovered"] is True
        assert [(await recv(ws))["seq"] for _ in range(2)] == [9, 10]


async def test_cursor_older_than_history_gets_a_snapshot(served: tuple[Hub, FakeEngine, str]) -> None:
    _, engine, addr = served
    for _ in range(150):  # history holds 100
        engine.bin()
    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream") as ws:
        reply = await subscribe(ws, {"epoch": "e1", "seq": 10})
        assert reply == {"type": "subscribed", "epoch": "e1", "seq": 150, "recovered": False}
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and (snap["epoch"], snap["seq"]) == ("e1", 150)
        assert snap["state"]["lastBin"] == 149
        engine.bin()
        assert (await recv(ws))["seq"] == 151


async def test_unknown_run_ping_and_filter(served: tuple[Hub, FakeEngine, str]) -> None:
    _, engine, addr = served
    async with connect(f"ws://{addr}/v1/runs/nope/stream") as ws:
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 4404
    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream") as ws:
        await ws.send('{"type":"ping"}')
        assert await recv(ws) == {"type": "pong"}
        await subscribe(ws, None, nodes=["B"])
        engine.bin()
        update = await recv(ws)
        assert [d["nodeId"] for d in update["deltas"]] == ["B"]
        await ws.send('{"type":"ping"}')
        assert (await recv(ws))["type"] in {"pong", "progress"}


async def test_oversized_message_closes_1009(served: tuple[Hub, FakeEngine, str]) -> None:
    _, _, addr = served
    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream") as ws:
        await ws.send("{" + " " * (64 * 1024) + "}")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1009


@pytest.mark.parametrize(("token", "code"), [(None, 4408), ("bad", 4401), ("other-run", 4403), ("good", None)])
async def test_auth(token: str | None, code: int | None, uvicorn_server: Any) -> None:
    hub = Hub()
    engine = FakeEngine(hub)
    settings = StreamSettings(auth_timeout_s=0.2, heartbeat_s=0.05)
    app = make_app(hub, engine, settings, TokenAuth())
    async with uvicorn_server(app) as addr, connect(f"ws://{addr}/v1/runs/{RUN}/stream") as ws:
        if token is not None:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        if code is not None:
            with pytest.raises(ConnectionClosed):
                await recv(ws)
            assert ws.close_code == code
            return
        assert (await subscribe(ws))["type"] == "subscribed"
        beat = await recv(ws)  # heartbeats every 50 ms
        assert beat == {"v": 1, "type": "progress", "runId": RUN, "epoch": "e1", "seq": 0} | {
            "watermark": -1,
            "lagBins": 0,
        }


async def stalled_client(port: int, path: str) -> socket.socket:
    """A raw WebSocket client with a tiny receive buffer: handshake, subscribe, then never read."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    payload = b'{"type":"subscribe","since":null,"nodes":null}'
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    async with asyncio.timeout(5):
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += await loop.sock_recv(sock, 1)  # byte by byte: leave frames unread
        assert response.startswith(b"HTTP/1.1 101"), response
        await loop.sock_sendall(sock, frame)
    return sock


async def test_stalled_client_does_not_delay_the_others(uvicorn_server: Any) -> None:
    hub = Hub(HubLimits(client_queue=50))
    engine = FakeEngine(hub, pad=8000)
    async with uvicorn_server(make_app(hub, engine, StreamSettings(heartbeat_s=60, close_timeout_s=0.5))) as addr:
        url = f"ws://{addr}/v1/runs/{RUN}/stream"

        async def healthy(n: int, ready: asyncio.Event, lat: list[float], seqs: list[int]) -> None:
            async with connect(url, max_size=None) as ws:
                await subscribe(ws, {"epoch": "e1", "seq": engine.seq})
                ready.set()
                while len(seqs) < n:
                    msg = await recv(ws)
                    if msg["type"] == "run_update":
                        lat.append(time.perf_counter() - msg["sentAt"])
                        seqs.append(msg["seq"])

        async def phase(n: int, stall: bool) -> tuple[list[float], list[list[int]]]:
            lats: list[list[float]] = [[], []]
            seqs: list[list[int]] = [[], []]
            readies = [asyncio.Event(), asyncio.Event()]
            start = engine.seq
            clients = [asyncio.create_task(healthy(n, readies[i], lats[i], seqs[i])) for i in range(2)]
            async with asyncio.timeout(10):
                await asyncio.gather(*(r.wait() for r in readies))
            for i in range(n):
                engine.bin(b=engine.last_bin if stall and i % 5 == 4 else None)
                if i % 10 == 0:
                    await asyncio.sleep(0.001)  # workload pacing, not synchronisation
            async with asyncio.timeout(20):
                await asyncio.gather(*clients)
            for s in seqs:
                assert s == list(range(start + 1, start + n + 1))
            return lats[0] + lats[1], seqs

        base, _ = await phase(300, stall=False)
        stalled = await stalled_client(int(addr.split(":")[1]), f"/v1/runs/{RUN}/stream")
        try:
            await eventually(lambda: hub.stats().clients == 1)
            loaded, _ = await phase(3000, stall=True)
            stats = hub.stats()
            p50, p50_loaded = statistics.median(base) * 1e3, statistics.median(loaded) * 1e3
            print(
                f"\nhealthy clients without a stalled one: p50={p50:.2f} ms max={max(base) * 1e3:.2f} ms;"
                f" with it: p50={p50_loaded:.2f} ms max={max(loaded) * 1e3:.2f} ms; stats={stats}"
            )
            assert stats.coalesced > 0 and stats.resyncs >= 1 and stats.slow_closes == 1
            assert stats.clients == 0  # the stalled one was detached; the healthy ones left
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(15):  # once it reads again, its connection ends
                while await loop.sock_recv(stalled, 1 << 16):
                    pass
        finally:
            stalled.close()


async def test_compact_subscription_gets_columns_and_a_bad_format_closes_1008(
    served: tuple[Hub, FakeEngine, str],
) -> None:
    """Issue 16: `format: compact` — the layout with the first update, then only the nodes that changed."""
    hub, engine, addr = served

    def publish(arrivals: dict[str, float]) -> None:
        engine.seq += 1
        engine.last_bin += 1
        ev = {"v": 1, "type": "run_update", "runId": RUN, "epoch": engine.epoch, "seq": engine.seq}
        ev |= {"binIndex": engine.last_bin, "deltas": []}
        for node, v in arrivals.items():
            ev["deltas"].append({"nodeId": node, "kind": "service", "metrics": {"arrivals": v}, "derived": {}})
        hub.publish(RUN, ev, orjson.dumps(ev))

    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream") as ws:
        assert (await subscribe(ws, None, format="compact"))["recovered"] is True
        publish({"A": 1.0, "B": 2.0})
        publish({"A": 1.0, "B": 3.0})
        first, second = await recv(ws), await recv(ws)
        assert first["format"] == "compact" and first["layout"] == {"nodes": ["A", "B"], "kinds": ["service"] * 2}
        assert first["metrics"] == {"arrivals": [1.0, 2.0]} and "deltas" not in first
        assert (second["base"], second["idx"], second["metrics"]) == (first["seq"], [1], {"arrivals": [3.0]})
    async with connect(f"ws://{addr}/v1/runs/{RUN}/stream") as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "since": None, "nodes": None, "format": "tiny"}).decode())
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1008
