"""WebSocket endpoint `GET /v1/runs/{runId}/stream[?since=<epoch>:<seq>]` (SPEC §7, §10).

Session: accept → auth (when on: an `Authorization: Bearer` handshake header, or a first
`{"type": "auth", "token"}` message within `auth_timeout_s`, else 4408) → unknown run 4404 →
wait for `{"type": "subscribe", "since", "nodes"}` (a non-null `since` wins over the query) →
`{"type": "subscribed", epoch, seq, recovered}` → replay, or one `{"type": "snapshot", epoch, seq,
state}` → live events, `progress` heartbeats, `pong`s. Events are sent as text frames carrying the
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
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from engine_live.errors import (
    AuthTimeoutError,
    FlowTimeError,
    ForbiddenError,
    NotFoundError,
    SlowConsumerError,
    StreamError,
    TooLargeError,
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
    snapshot_message,
    subscribed_message,
)
from stream_hub.hub import Hub
from stream_hub.lifecycle import ClientLifecycle, ClientState
from stream_hub.ports import Authenticator, Clock, RunLookup, SystemClock
from stream_hub.subscription import Close, Control, Delivery, Heartbeat, Resync, Subscription

__all__ = ["StreamSettings", "serve_stream"]

log = logging.getLogger("flowtime.stream")

# Replies that never change, encoded once.
PONG = encode_event(pong_message())
RESYNC = encode_event(resync_message())
SUBSCRIBE_EXPECTED = encode_event(error_message("subscribe_expected"))
ALREADY_SUBSCRIBED = encode_event(error_message("already_subscribed"))
UNKNOWN_MESSAGE = encode_event(error_message("unknown_message"))


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Per-endpoint limits and timings; `clock` drives heartbeats (tests inject a fast one)."""

    auth_timeout_s: float = 5.0
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

    async def send(self, payload: bytes, text: str | None = None) -> None:
        """One frame: text (`text` when already decoded) or binary, as configured."""
        if self.cfg.text_frames:
            await self.ws.send({"type": "websocket.send", "text": text if text is not None else payload.decode()})
        else:
            await self.ws.send({"type": "websocket.send", "bytes": payload})

    async def close(self, code: int, reason: str = "") -> None:
        """Close with `code`, bounded by `close_timeout_s`; a client already gone is fine."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(self.cfg.close_timeout_s):
                await self.ws.close(code, reason)

    def query_since(self) -> Cursor | None:
        """The `?since=<epoch>:<seq>` cursor; None when absent (StreamError when malformed)."""
        text = self.ws.query_params.get("since")
        return parse_cursor(text) if text else None

    async def authenticate(self) -> None:
        """A bearer header, else a first `auth` message in time; the token must grant `read`."""
        if self.auth is None:
            self.life.advance(ClientState.AUTHENTICATED)
            return
        header = self.ws.headers.get("authorization", "")
        token: str | None = header[7:] if header.lower().startswith("bearer ") else None
        if token is None:
            try:
                async with asyncio.timeout(self.cfg.auth_timeout_s):
                    body = await _receive_message(self.ws, self.cfg.max_message_bytes)
            except TimeoutError:
                raise AuthTimeoutError("no auth in time") from None
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
        self.life.advance(ClientState.AUTHENTICATED)

    async def wait_for_subscribe(self) -> SubscribeMessage:
        """Answer pings (and ignore extra `auth`s) until the client subscribes."""
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
        sub = self.hub.subscribe(self.run_id, message.since or query_since, message.nodes)
        self.life.advance(ClientState.SUBSCRIBED)
        return sub

    def take_snapshot(self, sub: Subscription) -> bytes:
        """Read the live state and align the subscription with it, with no await in between."""
        state = self.runs.snapshot_state(self.run_id)
        epoch, seq = self.runs.current(self.run_id)
        epoch, seq = str(state.get("epoch", epoch)), int(state.get("seq", seq))
        sub.resume_after_snapshot(epoch, seq)
        return encode_event(snapshot_message(epoch, seq, state))

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
                snapshot = self.take_snapshot(sub)
                await self.send(RESYNC)
                await self.send(snapshot)
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
        await self.ws.accept()
        sub: Subscription | None = None
        try:
            query_since = self.query_since()
            await self.authenticate()
            if not self.runs.exists(self.run_id):
                raise NotFoundError("unknown run")
            message = await self.wait_for_subscribe()
            sub = self.subscribe(message, query_since)
            snapshot = None if sub.recovered else self.take_snapshot(sub)
            seq = sub.seq if snapshot is None else sub.last_seq
            await self.send(encode_event(subscribed_message(sub.epoch, seq, sub.recovered)))
            if snapshot is not None:
                await self.send(snapshot)
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
