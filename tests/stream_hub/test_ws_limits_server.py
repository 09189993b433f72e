"""Connection limits, the idle timeout and shared snapshots on a real uvicorn server (issue 12 #4).

The fake-clock versions of these rules are in `test_ws_session.py`; here real `websockets` clients
meet a real server on loopback, with short real timeouts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from stream_hub.hub import Hub, HubLimits
from stream_hub.ws_endpoint import StreamSettings, serve_stream
from tests.stream_hub.one_run import RUN, OneRunLookup

pytestmark = pytest.mark.integration


class Engine(OneRunLookup):
    """A RunLookup with StateCapture; counts captures and where bodies were built."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.captures, self.threads = 0, set[str]()

    def snapshot_state(self, run_id: str) -> dict[str, Any]:
        return {"runId": run_id, "epoch": "e1", "seq": self.seq}

    def capture_state(self, run_id: str) -> Callable[[], dict[str, Any]]:
        self.captures += 1
        state = self.snapshot_state(run_id)

        def build() -> dict[str, Any]:
            self.threads.add(threading.current_thread().name)
            return state

        return build

    def publish(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            ev = {"v": 1, "type": "run_update", "runId": RUN, "epoch": "e1", "seq": self.seq, "binIndex": self.seq}
            self.hub.publish(RUN, ev, orjson.dumps(ev))


@pytest.fixture
async def served(loopback_server: Any) -> AsyncIterator[tuple[Hub, Engine, str]]:
    hub = Hub(HubLimits(history_events=5, max_connections=50, max_connections_per_key=3))
    engine = Engine(hub)
    cfg = StreamSettings(idle_s=0.5, heartbeat_s=0.05, retry_after_s=2)
    app = FastAPI()

    @app.websocket("/v1/runs/{run_id}/stream")
    async def stream(websocket: WebSocket, run_id: str) -> None:
        await serve_stream(websocket, run_id, hub, engine, None, cfg)

    async with loopback_server(app) as addr:
        yield hub, engine, f"ws://{addr}/v1/runs/{RUN}/stream"
    hub.snapshots.close()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        body: dict[str, Any] = orjson.loads(await ws.recv())
        return body


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll a server-side condition with a bound (the server reacts on its own tasks)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_over_the_per_client_limit_the_handshake_gets_429(served: tuple[Hub, Engine, str]) -> None:
    hub, _, url = served
    held = [await connect(url) for _ in range(3)]
    with pytest.raises(InvalidStatus) as refused:
        await connect(url)
    response = refused.value.response
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    assert orjson.loads(response.body or b"{}")["error"] == "too_many_connections"
    await held[0].close()
    await eventually(lambda: hub.connections.stats().open == 2)
    again = await connect(url)  # the place was given back
    for ws in (*held[1:], again):
        await ws.close()
    await eventually(lambda: hub.connections.stats().open == 0)
    assert hub.connections.stats().refused == 1


async def test_an_unsubscribed_connection_is_closed_and_a_subscribed_one_is_not(
    served: tuple[Hub, Engine, str],
) -> None:
    hub, _, url = served
    async with connect(url) as idle, connect(url) as live:
        await live.send('{"type":"subscribe","since":null,"nodes":null}')
        assert (await recv(live))["type"] == "subscribed"
        await idle.send('{"type":"ping"}')  # a ping does not count as subscribing
        assert await recv(idle) == {"type": "pong"}
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await recv(idle)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
        beats = 0
        while beats < 5:  # heartbeats go on past the idle timeout for the subscribed one
            beats += (await recv(live))["type"] == "progress"
    await eventually(lambda: hub.connections.stats().open == 0)


async def test_subscribers_needing_a_snapshot_share_one_built_in_the_snapshot_thread(
    served: tuple[Hub, Engine, str],
) -> None:
    hub, engine, url = served
    engine.publish(10)  # history holds 6..10: `since: null` needs a snapshot
    clients = [await connect(url) for _ in range(3)]
    for ws in clients:
        await ws.send('{"type":"subscribe","since":null,"nodes":null}')
    for ws in clients:
        assert (await recv(ws))["recovered"] is False
        snapshot = await recv(ws)
        assert (snapshot["type"], snapshot["seq"], snapshot["state"]["seq"]) == ("snapshot", 10, 10)
    assert engine.captures == 1 and all(name.startswith("ws-snapshot") for name in engine.threads)
    engine.publish(1)
    for ws in clients:
        while (update := await recv(ws))["type"] == "progress":  # heartbeats come every 50 ms
            continue
        assert (update["type"], update["seq"]) == ("run_update", 11)
        await ws.close()
    await eventually(lambda: hub.stats().clients == 0)
