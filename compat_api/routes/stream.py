"""`GET /v1/runs/{runId}/stream`: the WebSocket stream of a live run (SPEC §7), served by `stream_hub`.

`LiveLookup.capture_state` is `LiveApi.state_live` in two steps, so that a new subscriber's snapshot
is built off the event loop (`stream_hub.snapshots`): on the loop, copies of the bins the body reads
(the last `STATE_LIVE_WINDOW_BINS` plus the derived metrics' look-back: ~300 of the retained bins)
and the run's position; in the snapshot thread, the same builders over those copies.
`tests/stream_hub/test_snapshot_capture.py` pins the two bodies equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, WebSocket

from compat_api.auth import authorize
from compat_api.context import AppContext, Authenticator
from compat_api.live_api import LiveApi
from stream_hub.ws_endpoint import StreamSettings, serve_stream

router = APIRouter()
CLOSE_UNAVAILABLE = 1011  # the service runs no live engine


class LiveLookup:
    """The live engine as the stream endpoint's `RunLookup`."""

    def __init__(self, live: LiveApi) -> None:
        self.live = live

    def exists(self, run_id: str) -> bool:
        """Whether the engine holds the run."""
        return self.live.knows(run_id)

    def snapshot_state(self, run_id: str) -> dict[str, Any]:
        """The state a new subscriber starts from."""
        return self.live.state_live(run_id)

    def capture_state(self, run_id: str) -> Callable[[], dict[str, Any]]:
        """`snapshot_state` split: copies taken now (on the loop), the body built later from them only."""
        return self.live.capture_state_live(run_id, copy=True)

    def current(self, run_id: str) -> tuple[str, int]:
        """The run's (epoch, seq)."""
        run = self.live.handle(run_id).run
        return run.epoch, run.seq

    def progress(self, run_id: str) -> tuple[int | None, int]:
        """The run's watermark and how far lastBin trails it (heartbeats)."""
        run = self.live.handle(run_id).run
        return run.watermark, max(0, run.watermark - run.last_bin)


class ScopedAuth:
    """The service's authenticator as the stream endpoint's."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    def check(self, token: str | None, scope: str, run_id: str) -> None:
        """Raise unless `token` grants `scope` on the run (the one check, `compat_api.auth.authorize`)."""
        authorize(self.auth, token, scope, (run_id,))


@router.websocket("/v1/runs/{run_id}/stream")
async def stream(websocket: WebSocket, run_id: str) -> None:
    """Serve one stream client."""
    ctx: AppContext = websocket.app.state.ctx
    if ctx.hub is None or ctx.live is None:
        await websocket.close(code=CLOSE_UNAVAILABLE)
        return
    s = ctx.settings
    settings = StreamSettings(
        heartbeat_s=s.heartbeat_seconds,
        max_message_bytes=s.max_ws_message_bytes,
        auth_timeout_s=s.ws_auth_timeout_seconds,
        idle_s=s.ws_idle_seconds,
        snapshot_max_age_s=s.ws_snapshot_max_age_seconds,
        retry_after_s=s.retry_after_seconds,
    )
    auth = ScopedAuth(ctx.auth) if ctx.auth.enabled else None
    await serve_stream(websocket, run_id, ctx.hub, LiveLookup(ctx.live), auth, settings)
