"""The WebSocket session's limits, timeouts and snapshots on a fake ASGI socket and a fake clock.

No server and no real time: `FakeClock` only moves when a test advances it, and the socket is a
pair of queues. The same rules on a real uvicorn server: `test_ws_limits_server.py`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from starlette.websockets import WebSocket

from engine_live.errors import UnauthenticatedError
from engine_live.protocol import CloseCode
from stream_hub.hub import Hub, HubLimits
from stream_hub.ws_endpoint import StreamSettings, serve_stream
from tests.stream_hub.one_run import RUN, OneRunLookup


class FakeClock:
    """Monotonic time that moves only in `advance`; sleepers wake when their deadline passes."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.changed = asyncio.Event()  # set on every sleep and by the sockets on every send

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded) until `condition` holds, re-checking whenever something changed."""
        async with asyncio.timeout(5):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        self.changed.set()
        await future

    @property
    def sleepers(self) -> int:
        return sum(1 for _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in self._sleepers:
            if deadline <= self.now and not future.done():
                future.set_result(None)
        self._sleepers = [(d, f) for d, f in self._sleepers if not f.done()]


class FakeSocket:
    """The ASGI side of one WebSocket: what the client sends, what the server sent."""

    def __init__(self, clock: FakeClock, *, denial: bool = True, host: str = "127.0.0.1") -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.clock = clock
        self.scope = {
            "type": "websocket",
            "path": f"/v1/runs/{RUN}/stream",
            "query_string": b"",
            "headers": [],
            "client": (host, 50000),
            "extensions": {"websocket.http.response": {}} if denial else {},
        }
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.clock.changed.set()

    def client_sends(self, body: dict[str, Any]) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": orjson.dumps(body).decode()})

    def leave(self) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    def close_code(self) -> int | None:
        return next((m.get("code", 1000) for m in self.sent if m["type"] == "websocket.close"), None)

    def http_status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "websocket.http.response.start"), None)

    async def until(self, condition: Callable[[], bool]) -> None:
        await self.clock.until(condition)


class Engine(OneRunLookup):
    """A RunLookup (with StateCapture) whose snapshot body records where it was built."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.captures, self.threads = 0, list[str]()

    def snapshot_state(self, run_id: str) -> dict[str, Any]:
        return self.capture_state(run_id)()

    def capture_state(self, run_id: str) -> Callable[[], dict[str, Any]]:
        self.captures += 1
        seq = self.seq

        def build() -> dict[str, Any]:
            self.threads.append(threading.current_thread().name)
            return {"runId": run_id, "epoch": "e1", "seq": seq}

        return build

    def publish(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            ev = {"v": 1, "type": "run_update", "runId": RUN, "epoch": "e1", "seq": self.seq, "binIndex": self.seq}
            self.hub.publish(RUN, ev | {"deltas": []}, orjson.dumps(ev | {"deltas": []}))


class TokenAuth:
    def check(self, token: str | None, scope: str, run_id: str) -> None:
        if not token or not token.startswith("good"):
            raise UnauthenticatedError("bad token")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings(clock: FakeClock, **kw: Any) -> StreamSettings:
    return StreamSettings(clock=clock, idle_s=30.0, heartbeat_s=5.0, **kw)


def serve(sock: FakeSocket, hub: Hub, engine: Engine, cfg: StreamSettings, auth: Any = None) -> asyncio.Task[None]:
    ws = WebSocket(sock.scope, sock.receive, sock.send)
    return asyncio.create_task(serve_stream(ws, RUN, hub, engine, auth, cfg))


# -- idle connections ------------------------------------------------------------------------------
async def test_a_connection_that_never_subscribes_is_closed_after_the_idle_timeout(clock: FakeClock) -> None:
    hub = Hub()
    engine = Engine(hub)
    sock = FakeSocket(clock)
    task = serve(sock, hub, engine, settings(clock))
    await sock.until(lambda: clock.sleepers == 1)  # accepted, waiting for `subscribe`
    sock.client_sends({"type": "ping"})  # pings do not keep an unsubscribed connection open
    await sock.until(lambda: {"type": "pong"} in sock.messages())
    clock.advance(29.9)
    assert sock.close_code() is None
    clock.advance(0.2)
    await sock.until(lambda: sock.close_code() is not None)
    assert sock.close_code() == CloseCode.AUTH_TIMEOUT == 4408
    await task
    assert hub.connections.stats().open == 0


async def test_a_subscribed_connection_is_not_idle_and_keeps_its_heartbeats(clock: FakeClock) -> None:
    hub = Hub()
    engine = Engine(hub)
    sock = FakeSocket(clock)
    task = serve(sock, hub, engine, settings(clock))
    sock.client_sends({"type": "subscribe", "since": None, "nodes": None})
    await sock.until(lambda: any(m["type"] == "subscribed" for m in sock.messages()))
    for _ in range(10):  # 100 s: far past the idle timeout
        await sock.until(lambda: clock.sleepers >= 1)  # the heartbeat ticker waits on the clock
        clock.advance(10.0)
        beats = sum(1 for m in sock.messages() if m["type"] == "progress")
        await sock.until(lambda b=beats: sum(1 for m in sock.messages() if m["type"] == "progress") > b)
    assert sock.close_code() is None
    sock.leave()
    await task


async def test_auth_on_the_token_must_come_within_the_auth_timeout(clock: FakeClock) -> None:
    hub = Hub()
    sock = FakeSocket(clock)
    task = serve(sock, hub, Engine(hub), settings(clock, auth_timeout_s=5.0), TokenAuth())
    await sock.until(lambda: clock.sleepers == 1)
    clock.advance(5.0)
    await task
    assert sock.close_code() == 4408


# -- connection limits -----------------------------------------------------------------------------
async def test_over_the_per_client_limit_the_handshake_is_refused_with_429(clock: FakeClock) -> None:
    hub = Hub(HubLimits(max_connections=10, max_connections_per_key=2))
    engine = Engine(hub)
    held = [FakeSocket(clock) for _ in range(2)]
    tasks = [serve(s, hub, engine, settings(clock)) for s in held]
    await held[1].until(lambda: hub.connections.stats().open == 2)
    refused = FakeSocket(clock)
    await serve(refused, hub, engine, settings(clock))
    assert refused.http_status() == 429 and not any(m["type"] == "websocket.accept" for m in refused.sent)
    headers = dict(next(m for m in refused.sent if m["type"] == "websocket.http.response.start")["headers"])
    assert headers[b"retry-after"] == b"1"
    other_host = FakeSocket(clock, host="10.0.0.2")  # another address has its own bucket
    tasks.append(serve(other_host, hub, engine, settings(clock)))
    await other_host.until(lambda: hub.connections.stats().open == 3)
    without_denial = FakeSocket(clock, denial=False)  # a server without the denial extension: accept + 1013
    await serve(without_denial, hub, engine, settings(clock))
    assert without_denial.close_code() == CloseCode.TRY_AGAIN_LATER == 1013
    for s in (*held, other_host):
        s.leave()
    await asyncio.gather(*tasks)
    assert hub.connections.stats().open == 0 and hub.connections.stats().refused == 2


async def test_the_total_limit_holds_across_clients(clock: FakeClock) -> None:
    hub = Hub(HubLimits(max_connections=2, max_connections_per_key=100))
    engine = Engine(hub)
    socks = [FakeSocket(clock, host=f"10.0.0.{i}") for i in range(3)]
    tasks = [serve(s, hub, engine, settings(clock)) for s in socks[:2]]
    await socks[0].until(lambda: hub.connections.stats().open == 2)
    await serve(socks[2], hub, engine, settings(clock))
    assert socks[2].http_status() == 429
    socks[0].leave()
    await tasks[0]
    again = FakeSocket(clock, host="10.0.0.9")  # a place given back is taken again
    tasks.append(serve(again, hub, engine, settings(clock)))
    await again.until(lambda: any(m["type"] == "websocket.accept" for m in again.sent))
    for s in (socks[1], again):
        s.leave()
    await asyncio.gather(*tasks)


async def test_with_auth_on_a_token_over_its_limit_is_closed_with_1013(clock: FakeClock) -> None:
    hub = Hub(HubLimits(max_connections=10, max_connections_per_key=1))
    engine = Engine(hub)
    first, second = FakeSocket(clock, host="10.0.0.1"), FakeSocket(clock, host="10.0.0.2")
    tasks = [serve(s, hub, engine, settings(clock), TokenAuth()) for s in (first, second)]
    first.client_sends({"type": "auth", "token": "good-1"})
    first.client_sends({"type": "subscribe", "since": None, "nodes": None})
    await first.until(lambda: any(m["type"] == "subscribed" for m in first.messages()))
    second.client_sends({"type": "auth", "token": "good-1"})  # the same token from another address
    await tasks[1]
    assert second.close_code() == 1013
    first.leave()
    await tasks[0]
    assert hub.connections.stats().open == 0


# -- snapshots -----------------------------------------------------------------------------------
async def test_many_subscribers_needing_a_snapshot_share_one_built_off_the_loop(clock: FakeClock) -> None:
    hub = Hub(HubLimits(history_events=5))
    engine = Engine(hub)
    engine.publish(20)  # seq 1 has left history: `since: null` needs a snapshot
    socks = [FakeSocket(clock, host=f"10.0.0.{i}") for i in range(8)]
    tasks = [serve(s, hub, engine, settings(clock)) for s in socks]
    for s in socks:
        s.client_sends({"type": "subscribe", "since": None, "nodes": None})
    for s in socks:
        await s.until(lambda s=s: any(m["type"] == "snapshot" for m in s.messages()))
    assert engine.captures == 1 and engine.threads and engine.threads[0].startswith("ws-snapshot")
    engine.publish(2)  # within the max age the next subscriber reuses it and replays 21, 22
    late = FakeSocket(clock, host="10.0.1.1")
    tasks.append(serve(late, hub, engine, settings(clock)))
    late.client_sends({"type": "subscribe", "since": None, "nodes": None})
    await late.until(lambda: sum(1 for m in late.messages() if m["type"] == "run_update") == 2)
    kinds = [(m["type"], m.get("seq")) for m in late.messages()]
    assert kinds == [("subscribed", 20), ("snapshot", 20), ("run_update", 21), ("run_update", 22)]
    assert engine.captures == 1
    clock.advance(5.1)  # too old now: the next one is built anew
    fresh = FakeSocket(clock, host="10.0.1.2")
    tasks.append(serve(fresh, hub, engine, settings(clock)))
    fresh.client_sends({"type": "subscribe", "since": None, "nodes": None})
    await fresh.until(lambda: any(m["type"] == "snapshot" for m in fresh.messages()))
    assert [m.get("seq") for m in fresh.messages()] == [22, 22] and engine.captures == 2
    for s in (*socks, late, fresh):
        s.leave()
    await asyncio.gather(*tasks)
    hub.snapshots.close()
