"""While recovery runs (SPEC §6), requests wait for it instead of seeing a half-recovered engine.

Health, readiness, metrics and the static dashboard answer at once; every other HTTP request and
WebSocket waits until the live service is ready, up to `RECOVERY_WAIT_SECONDS`, then gets 503
`recovering` with `Retry-After` (WebSocket: close 1013, try again later).
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from compat_api.context import AppContext

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/dashboard", "/openapi.json", "/docs")
RECOVERY_WAIT_SECONDS = 30.0


class RecoveryGate:
    """ASGI middleware: while recovery runs, requests wait for it, then get 503 (WebSocket: close 1013)."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on at once when it may, else once the service is ready; refuse it on timeout."""
        live = self.ctx.live
        path = scope.get("path", "")
        if (
            scope["type"] not in ("http", "websocket")
            or live is None
            or live.ready
            or path == "/"
            or path.startswith(OPEN_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        try:
            await asyncio.wait_for(live.wait_ready(), RECOVERY_WAIT_SECONDS)
        except TimeoutError:
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "recovering"})
            return
        body = orjson.dumps(
            {
                "error": "recovering",
                "message": "recovery is in progress; retry later",
                "progress": self.ctx.live.recovery_progress() if self.ctx.live is not None else {},
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": body})
