"""WebSocket endpoint `GET /v1/runs/{runId}/stream[?since=<epoch>:<seq>]` (SPEC §7, §10).

Session: admission (the hub's `ConnectionGate`, charged to the client's address: over a limit the
handshake is refused with 429) → accept → auth (when on: an `Authorization: Bearer` handshake
header, or a first `{"type": "auth", "token"}` message within `auth_timeout_s`, else 4408; the
connection is then charged to its token, over that token's limit: 1013) → unknown run 4404 → wait
for `{"type": "subscribe", "since", "nodes", "format"?, "classes"?}` (a non-null `since` wins over the query), until
`idle_s` after accept (else 4408) → `{"type": "subscribed", epoch, seq, recovered}` → replay, or one
`{"type": "snapshot", epoch, seq, state}` (shared and built off the loop: `stream_hub.snapshots`)
→ live events, `progress` heartbeats, `pong`s. Events are sent as text frames carrying the
publisher's JSON bytes (`StreamSettings.text_frames=False` sends the same bytes as binary frames).

Every message is built and parsed by `engine_live.protocol`. Whatever ends a session early is a
FlowTimeError (a malformed message or cursor, a bad token, an unknown run, a slow client); the
session closes with the error's `ws_close_code` from `engine_live.errors.ERROR_TABLE` and its
message as the reason.

One task sends (every frame goes through the subscription, so sends never interleave), one
receives, one ticks heartbeats; a 4008 close cancels a sender stuck on a client that stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine_live.errors import (
    AuthTimeoutError,
    FlowTimeError,
    ForbiddenError,
    IdleTimeoutError,
    NotFoundError,
    SlowConsumerError,
    StreamError,
    TooLargeError,
    TooManyConnectionsError,
    UnauthenticatedError,
)
from engine_live.protocol import (
    AuthMessage,
    ClientMessageType,
    CloseCode,
    Cursor,
    SubscribeMessage,
    client_message_type,
    close_code_for,
    decode_client_message,
    encode_event,
    error_message,
    heartbeat_event,
    parse_client_message,
    parse_cursor,
    parse_subscribe,
    pong_message,
    resync_message,
    subscribed_message,
)
from stream_hub.connections import Admission, address_key, token_key
from stream_hub.hub import Hub
from stream_hub.lifecycle import ClientLifecycle, ClientState
from stream_hub.ports import Authenticator, Clock, RunLookup, SystemClock
from stream_hub.snapshot_source import SnapshotSource
from stream_hub.subscription import Close, Control, Delivery, Heartbeat, Resync, Subscription

__all__ = ["StreamSettings", "serve_stream"]

log = logging.getLogger("flowtime.stream")

# Replies that never change, encoded once.
PONG = encode_event(pong_message())
RESYNC = encode_event(resync_message())
SUBSCRIBE_EXPECTED = encode_event(error_message("subscribe_expected"))
ALREADY_SUBSCRIBED = encode_event(error_message("already_subscribed"))
UNKNOWN_MESSAGE = encode_event(error_message("unknown_message"))
DENIAL_EXTENSION = "websocket.http.response"  # ASGI: the server can answer the handshake with a response
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Per-endpoint limits and timings; `clock` drives heartbeats, timeouts and snapshot ages
    (tests inject one they step)."""

    auth_timeout_s: float = 5.0
    idle_s: float = 30.0  # a connection that has not subscribed this long after accept is closed
    snapshot_max_age_s: float = 5.0  # a shared snapshot this old is rebuilt for the next subscriber
    retry_after_s: int = 1  # the `Retry-After` of a refused handshake
    heartbeat_s: float = 5.0
    max_message_bytes: int = 64 * 1024
    close_timeout_s: float = 2.0
    text_frames: bool = True
    clock: Clock = field(default_factory=SystemClock)


async def _receive_message(ws: WebSocket, limit: int) -> dict[str, Any]:
    """Next client message as a JSON object. WebSocketDisconnect when the client left,
    TooLargeError over `limit` bytes, StreamError when it is not a JSON object."""
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", CloseCode.NORMAL))
    text, data = msg.get("text"), msg.get("bytes")
    raw: str | bytes = text if isinstance(text, str) else (data if isinstance(data, bytes) else b"")
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    if size > limit:
        raise TooLargeError("message too large")
    return decode_client_message(raw)


async def _within(clock: Clock, seconds: float, work: Awaitable[T], error: FlowTimeError) -> T:
    """`work`'s result, or `error` when `seconds` pass on `clock` first (`work` is then cancelled)."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(max(0.0, seconds)))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(timer, task, return_exceptions=True)
    if task.cancelled():
        raise error
    return task.result()


async def _refuse(ws: WebSocket, exc: TooManyConnectionsError, cfg: StreamSettings) -> None:
    """Refuse a handshake: 429 with `Retry-After` where the server can answer it, else accept + 1013."""
    if DENIAL_EXTENSION in ws.scope.get("extensions", {}):
        headers = {"Retry-After": str(cfg.retry_after_s)}
        await ws.send_denial_response(JSONResponse(exc.to_body(), status_code=exc.http_status, headers=headers))
        return
    await ws.accept()
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
        async with asyncio.timeout(cfg.close_timeout_s):
            await ws.close(close_code_for(exc), exc.message)


class _Session:
    """One client's session, from accept to close."""

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
        self.accepted_at = 0.0
        self.snapshots = SnapshotSource(
            hub, runs, run_id, cfg.clock, max_age_s=cfg.snapshot_max_age_s, text_frames=cfg.text_frames
        )

    async def send(self, payload: bytes | str, text: str | None = None) -> None:
        """One frame: text (`text` when already decoded) or binary, as configured."""
        if self.cfg.text_frames:
            if text is None:
                text = payload if isinstance(payload, str) else payload.decode()
            await self.ws.send({"type": "websocket.send", "text": text})
        else:
            data = payload.encode() if isinstance(payload, str) else payload
            await self.ws.send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int, reason: str = "") -> None:
        """Close with `code`, bounded by `close_timeout_s`; a client already gone is fine."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(self.cfg.close_timeout_s):
                await self.ws.close(code, reason)

    def query_since(self) -> Cursor | None:
        """The `?since=<epoch>:<seq>` cursor; None when absent (StreamError when malformed)."""
        text = self.ws.query_params.get("since")
        return parse_cursor(text) if text else None

    async def authenticate(self, admission: Admission) -> None:
        """A bearer header, else a first `auth` message in time; the token must grant `read`. The
        connection is then charged to its token (TooManyConnectionsError over the token's limit)."""
        if self.auth is None:
            self.life.advance(ClientState.AUTHENTICATED)
            return
        header = self.ws.headers.get("authorization", "")
        token: str | None = header[7:] if header.lower().startswith("bearer ") else None
        if token is None:
            receive = _receive_message(self.ws, self.cfg.max_message_bytes)
            seconds = min(self.cfg.auth_timeout_s, self.cfg.idle_s)
            body = await _within(self.cfg.clock, seconds, receive, AuthTimeoutError("no auth in time"))
            try:
                message = parse_client_message(body)
            except StreamError:
                message = None
            if not isinstance(message, AuthMessage):
                raise UnauthenticatedError("auth message expected first")
            token = message.token
        try:
            self.auth.check(token, "read", self.run_id)
        except (UnauthenticatedError, ForbiddenError) as exc:
            raise type(exc)(exc.code, code=exc.code) from None  # the close reason names the code only
        admission.rekey(token_key(token))
        self.life.advance(ClientState.AUTHENTICATED)

    async def wait_for_subscribe(self) -> SubscribeMessage:
        """Answer pings (and ignore extra `auth`s) until the client subscribes, at most until `idle_s`
        after accept (IdleTimeoutError: pings do not keep an unsubscribed connection open)."""
        left = self.accepted_at + self.cfg.idle_s - self.cfg.clock.monotonic()
        return await _within(self.cfg.clock, left, self._next_subscribe(), IdleTimeoutError("no subscribe in time"))

    async def _next_subscribe(self) -> SubscribeMessage:
        while True:
            body = await _receive_message(self.ws, self.cfg.max_message_bytes)
            kind = client_message_type(body)
            if kind is ClientMessageType.SUBSCRIBE:
                return parse_subscribe(body)
            if kind is ClientMessageType.PING:
                await self.send(PONG)
            elif kind is not ClientMessageType.AUTH:
                await self.send(SUBSCRIBE_EXPECTED)

    def subscribe(self, message: SubscribeMessage, query_since: Cursor | None) -> Subscription:
        """Register the subscription with the hub (the message's cursor wins over the query's)."""
        epoch, head = self.runs.current(self.run_id)
        self.hub.ensure_run(self.run_id, epoch, head)
        since, compact = message.since or query_since, message.format == "compact"
        sub = self.hub.subscribe(self.run_id, since, message.nodes, compact=compact, classes=message.classes)
        self.life.advance(ClientState.SUBSCRIBED)
        return sub

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
                await self.send(encode_event(heartbeat_event(self.run_id, sub.epoch, sub.last_seq, watermark, lag)))
            elif isinstance(item, Resync):
                snapshot = await self.snapshots.take(sub)
                await self.send(RESYNC)
                await self.send(snapshot.frame)
            elif isinstance(item, Close):
                await self.close(item.code, item.reason)
                return

    async def listen(self, sub: Subscription) -> FlowTimeError | None:
        """Reads client messages until disconnect (None) or a violation (the error to close with)."""
        try:
            while True:
                body = await _receive_message(self.ws, self.cfg.max_message_bytes)
                kind = client_message_type(body)
                if kind is ClientMessageType.PING:
                    sub.push_control(PONG)
                elif kind is ClientMessageType.SUBSCRIBE:
                    sub.push_control(ALREADY_SUBSCRIBED)
                elif kind is not ClientMessageType.AUTH:
                    sub.push_control(UNKNOWN_MESSAGE)
        except WebSocketDisconnect:
            return None
        except FlowTimeError as exc:
            return exc

    async def tick(self, sub: Subscription) -> None:
        """Ask the subscription for a heartbeat every `heartbeat_s`."""
        while True:
            await self.cfg.clock.sleep(self.cfg.heartbeat_s)
            sub.request_heartbeat()

    async def stream(self, sub: Subscription) -> None:
        """Send, receive and tick until one of them ends; SlowConsumerError when the hub gave up on us."""
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
            raise SlowConsumerError("too slow")
        if listener in done and not listener.cancelled() and listener.exception() is None:
            violation = listener.result()
            if violation is not None:
                await self.close(close_code_for(violation))

    async def run(self) -> None:
        """The whole session; every early end closes with the code of the error that caused it."""
        try:
            admission = self.hub.connections.admit(address_key(self.ws.client.host if self.ws.client else None))
        except TooManyConnectionsError as exc:
            await _refuse(self.ws, exc, self.cfg)
            return
        try:
            await self.ws.accept()
            self.accepted_at = self.cfg.clock.monotonic()
            await self.session(admission)
        finally:
            admission.release()

    async def session(self, admission: Admission) -> None:
        """From accept to close."""
        sub: Subscription | None = None
        try:
            query_since = self.query_since()
            await self.authenticate(admission)
            if not self.runs.exists(self.run_id):
                raise NotFoundError("unknown run")
            message = await self.wait_for_subscribe()
            sub = self.subscribe(message, query_since)
            snapshot = None if sub.recovered else await self.snapshots.take(sub)
            seq = sub.seq if snapshot is None else sub.last_seq
            await self.send(encode_event(subscribed_message(sub.epoch, seq, sub.recovered)))
            if snapshot is not None:
                await asyncio.sleep(0)  # a client that reset the connection is noticed before a big send
                await self.send(snapshot.frame)
            await self.stream(sub)
        except FlowTimeError as exc:
            if exc.ws_close_code is None:
                raise
            await self.close(close_code_for(exc), exc.message)
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
