"""WebSocket endpoint `GET /v1/runs/{runId}/stream[?since=<epoch>:<seq>]` (SPEC §7, §10).

Session: accept → auth (when on: an `Authorization: Bearer` handshake header, or a first
`{"type": "auth", "token"}` message within `auth_timeout_s`, else 4408) → unknown run 4404 →
wait for `{"type": "subscribe", "since", "nodes"}` (a non-null `since` wins over the query) →
`{"type": "subscribed", epoch, seq, recovered}` → replay, or one `{"type": "snapshot", epoch, seq,
state}` → live events, `progress` heartbeats, `pong`s. Events are sent as text frames carrying the
publisher's JSON bytes (`StreamSettings.text_frames=False` sends the same bytes as binary frames).

One task sends (every frame goes through the subscription, so sends never interleave), one
receives, one ticks heartbeats; a 4008 close cancels a sender stuck on a client that stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine_live.errors import ForbiddenError, TooLargeError, UnauthenticatedError
from stream_hub.hub import Hub
from stream_hub.lifecycle import ClientLifecycle, ClientState
from stream_hub.ports import Authenticator, Clock, RunLookup, SystemClock
from stream_hub.subscription import Close, Control, Delivery, Heartbeat, Resync, Subscription

__all__ = ["CLOSE_AUTH_TIMEOUT", "CLOSE_POLICY", "CLOSE_UNKNOWN_RUN", "StreamSettings", "serve_stream"]

log = logging.getLogger("flowtime.stream")

CLOSE_AUTH_TIMEOUT = 4408
CLOSE_UNKNOWN_RUN = 4404
CLOSE_POLICY = 1008  # malformed message or `since`
CLOSE_TOO_LARGE = TooLargeError.ws_close_code or 1009
PONG = b'{"type":"pong"}'
RESYNC = b'{"type":"resync"}'


@dataclass(frozen=True, slots=True)
class StreamSettings:
    auth_timeout_s: float = 5.0
    heartbeat_s: float = 5.0
    max_message_bytes: int = 64 * 1024
    close_timeout_s: float = 2.0
    text_frames: bool = True
    clock: Clock = field(default_factory=SystemClock)


class _CloseWith(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_since(text: str | None) -> tuple[str, int] | None:
    """`<epoch>:<seq>` (the epoch may itself contain ':'); None when absent."""
    if text is None or text == "":
        return None
    epoch, sep, seq = text.rpartition(":")
    if not sep or not seq.isdigit():
        raise _CloseWith(CLOSE_POLICY, "since must be <epoch>:<seq>")
    return epoch, int(seq)


def _since_from_message(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("seq"), int) and value.get("epoch") is not None:
        return str(value["epoch"]), int(value["seq"])
    raise _CloseWith(CLOSE_POLICY, "since must be {epoch, seq} or null")


async def _receive_message(ws: WebSocket, limit: int) -> dict[str, Any] | None:
    """Next client message as a JSON object; None on disconnect."""
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        return None
    text, data = msg.get("text"), msg.get("bytes")
    raw: str | bytes = text if isinstance(text, str) else (data if isinstance(data, bytes) else b"")
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    if size > limit:
        raise _CloseWith(CLOSE_TOO_LARGE, "message too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _CloseWith(CLOSE_POLICY, "messages must be JSON objects") from None
    if not isinstance(body, dict):
        raise _CloseWith(CLOSE_POLICY, "messages must be JSON objects")
    return body


class _Session:
    def __init__(
        self,
        ws: WebSocket,
        run_id: str,
        hub: Hub,
        runs: RunLookup,
        auth: Authenticator | None,
        cfg: StreamSettings,
    ) -> None:
        self.ws, self.run_id, self.hub, self.runs, self.auth, self.cfg = ws, run_id, hub, runs, auth, cfg
        self.life = ClientLifecycle()

    async def send(self, payload: bytes, text: str | None = None) -> None:
        if self.cfg.text_frames:
            await self.ws.send({"type": "websocket.send", "text": text if text is not None else payload.decode()})
        else:
            await self.ws.send({"type": "websocket.send", "bytes": payload})

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(self.cfg.close_timeout_s):
                await self.ws.close(code, reason)

    async def authenticate(self) -> None:
        if self.auth is None:
            self.life.advance(ClientState.AUTHENTICATED)
            return
        header = self.ws.headers.get("authorization", "")
        token: str | None = header[7:] if header.lower().startswith("bearer ") else None
        if token is None:
            try:
                async with asyncio.timeout(self.cfg.auth_timeout_s):
                    msg = await _receive_message(self.ws, self.cfg.max_message_bytes)
            except TimeoutError:
                raise _CloseWith(CLOSE_AUTH_TIMEOUT, "no auth in time") from None
            if msg is None:
                raise _CloseWith(1000)
            if msg.get("type") != "auth" or not isinstance(msg.get("token"), str):
                raise _CloseWith(UnauthenticatedError.ws_close_code or 4401, "auth message expected first")
            token = msg["token"]
        try:
            self.auth.check(token, "read", self.run_id)
        except (UnauthenticatedError, ForbiddenError) as exc:
            raise _CloseWith(exc.ws_close_code or 4401, exc.code) from None
        self.life.advance(ClientState.AUTHENTICATED)

    async def wait_for_subscribe(self) -> dict[str, Any]:
        while True:
            msg = await _receive_message(self.ws, self.cfg.max_message_bytes)
            if msg is None:
                raise _CloseWith(1000)
            kind = msg.get("type")
            if kind == "subscribe":
                return msg
            if kind == "ping":
                await self.send(PONG)
            elif kind != "auth":
                await self.send(orjson.dumps({"type": "error", "error": "subscribe_expected"}))

    def subscribe(self, msg: dict[str, Any], query_since: tuple[str, int] | None) -> Subscription:
        since = _since_from_message(msg.get("since")) or query_since
        nodes = msg.get("nodes")
        if nodes is not None and not (isinstance(nodes, list) and all(isinstance(n, str) for n in nodes)):
            raise _CloseWith(CLOSE_POLICY, "nodes must be a list of node ids or null")
        epoch, head = self.runs.current(self.run_id)
        self.hub.ensure_run(self.run_id, epoch, head)
        sub = self.hub.subscribe(self.run_id, since, nodes)
        self.life.advance(ClientState.SUBSCRIBED)
        return sub

    def take_snapshot(self, sub: Subscription) -> bytes:
        """Read the live state and align the subscription with it, with no await in between."""
        state = self.runs.snapshot_state(self.run_id)
        epoch, seq = self.runs.current(self.run_id)
        epoch, seq = str(state.get("epoch", epoch)), int(state.get("seq", seq))
        sub.resume_after_snapshot(epoch, seq)
        return orjson.dumps({"type": "snapshot", "epoch": epoch, "seq": seq, "state": state})

    async def pump(self, sub: Subscription) -> None:
        """The only task that sends once subscribed."""
        while True:
            item = await sub.next()
            if isinstance(item, Delivery):
                await self.send(item.payload, item.text if self.cfg.text_frames else None)
            elif isinstance(item, Control):
                await self.send(item.payload)
            elif isinstance(item, Heartbeat):
                watermark, lag = self.runs.progress(self.run_id)
                body = {"v": 1, "type": "progress", "runId": self.run_id, "epoch": sub.epoch}
                body |= {"seq": sub.last_seq, "watermark": watermark, "lagBins": lag}
                await self.send(orjson.dumps(body))
            elif isinstance(item, Resync):
                snapshot = self.take_snapshot(sub)
                await self.send(RESYNC)
                await self.send(snapshot)
            elif isinstance(item, Close):
                await self.close(item.code, item.reason)
                return

    async def listen(self, sub: Subscription) -> int | None:
        """Reads client messages until disconnect (None) or a violation (the close code)."""
        try:
            while True:
                msg = await _receive_message(self.ws, self.cfg.max_message_bytes)
                if msg is None:
                    return None
                kind = msg.get("type")
                if kind == "ping":
                    sub.push_control(PONG)
                elif kind == "subscribe":
                    sub.push_control(orjson.dumps({"type": "error", "error": "already_subscribed"}))
                elif kind != "auth":
                    sub.push_control(orjson.dumps({"type": "error", "error": "unknown_message"}))
        except _CloseWith as exc:
            return exc.code

    async def tick(self, sub: Subscription) -> None:
        while True:
            await self.cfg.clock.sleep(self.cfg.heartbeat_s)
            sub.request_heartbeat()

    async def stream(self, sub: Subscription) -> None:
        tasks = {
            asyncio.create_task(self.pump(sub)),
            listener := asyncio.create_task(self.listen(sub)),
            asyncio.create_task(self.tick(sub)),
            aborted := asyncio.create_task(sub.aborted.wait()),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if aborted in done:
            log.warning("closing slow websocket client", extra={"runId": self.run_id})
            await self.close(4008, "too slow")
        elif listener in done and not listener.cancelled() and listener.exception() is None:
            code = listener.result()
            if code is not None:
                await self.close(code)

    async def run(self) -> None:
        await self.ws.accept()
        sub: Subscription | None = None
        try:
            query_since = parse_since(self.ws.query_params.get("since"))
            await self.authenticate()
            if not self.runs.exists(self.run_id):
                raise _CloseWith(CLOSE_UNKNOWN_RUN, "unknown run")
            msg = await self.wait_for_subscribe()
            sub = self.subscribe(msg, query_since)
            snapshot = None if sub.recovered else self.take_snapshot(sub)
            seq = sub.seq if snapshot is None else sub.last_seq
            body = {"type": "subscribed", "epoch": sub.epoch, "seq": seq, "recovered": sub.recovered}
            await self.send(orjson.dumps(body))
            if snapshot is not None:
                await self.send(snapshot)
            await self.stream(sub)
        except _CloseWith as exc:
            await self.close(exc.code, exc.reason)
        except WebSocketDisconnect:
            pass
        finally:
            if sub is not None:
                self.hub.unsubscribe(sub)
            self.life.close()


async def serve_stream(
    websocket: WebSocket,
    run_id: str,
    hub: Hub,
    runs: RunLookup,
    auth: Authenticator | None,
    settings: StreamSettings | None = None,
) -> None:
    """Serve one client until it leaves, the run closes, or the policy closes it."""
    await _Session(websocket, run_id, hub, runs, auth, settings or StreamSettings()).run()
