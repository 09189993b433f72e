"""Request size limit (SPEC §10, §12.16): a pure ASGI middleware answering `BodyTooLargeError` (413).

A declared `Content-Length` over the limit is refused before the app runs. A body streamed without
one (or longer than declared) is counted as it is received; once over the limit the app's reads
fail and whatever it would have answered is replaced by the 413.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from engine_live.errors import BodyTooLargeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def body_too_large(limit: int) -> BodyTooLargeError:
    """The error for a body over `limit` bytes."""
    return BodyTooLargeError(f"request body exceeds {limit} bytes", limit=limit)


def too_large_body(limit: int) -> bytes:
    """The JSON body of the 413 answer: `{"error": "too_large", "message", "limit"}`."""
    return json.dumps(body_too_large(limit).to_body()).encode()


async def send_too_large(send: Send, limit: int) -> None:
    """Answer the request with the 413 directly (the middleware runs outside the app's handlers)."""
    body = too_large_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": BodyTooLargeError.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """`app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an HTTP request on with its body counted; answer 413 once it is over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.limit):
            await send_too_large(send, self.limit)
            return
        received = 0
        over = started = replaced = False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    raise body_too_large(self.limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if over and not started:  # whatever the app answers to an oversized body becomes the 413
                if not replaced:
                    replaced = True
                    await send_too_large(send, self.limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLargeError:
            if started:
                raise
        if over and not started and not replaced:
            await send_too_large(send, self.limit)


__all__ = ["BodyLimitMiddleware", "send_too_large", "too_large_body"]
