"""The HTTP face of the live runtime: run operations answered as the wire shows them (SPEC §12.1–§12.9).

`LiveApi` wraps `engine_live.runtime.service.LiveService`: operations pass through, and reads of
live runs — detail, listing, the state views of their retained bins — are built here from the
run handles. Everything runs on the event loop between two log records, so every read is consistent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from compat_api.state_view import StateSource, state_body, state_window_body
from engine_live.derived.live_hooks import DerivedHooks
from engine_live.derived.node_metrics import REQUIRED_LOOKBACK
from engine_live.runtime.handle import RunHandle
from engine_live.runtime.service import LiveService

STATE_LIVE_WINDOW_BINS = 288


class LiveApi:
    """Live-run operations and reads for the routes, the WebSocket endpoint and Kafka."""

    def __init__(self, service: LiveService, *, state_window_max_bins: int) -> None:
        self.service = service
        self.state_window_max_bins = state_window_max_bins

    async def start(self) -> None:
        """Recover every unfinished run (readiness follows)."""
        await self.service.start()

    async def stop(self) -> None:
        """Drain, snapshot and close every run."""
        await self.service.stop()

    @property
    def ready(self) -> bool:
        """Recovery is done."""
        return self.service.ready

    async def wait_ready(self) -> None:
        """Return once recovery is done."""
        await self.service.ready_event.wait()

    def recovery_progress(self) -> dict[str, int]:
        """How far recovery is, as `/readyz` shows it."""
        return self.service.recovery_progress().to_wire()

    async def storage_status(self) -> dict[str, object] | None:
        """None while storage takes writes, else the failing kinds of write (`/readyz`)."""
        return await self.service.storage_status()

    def knows(self, run_id: str) -> bool:
        """Whether the engine holds the run."""
        return self.service.knows(run_id)

    def handle(self, run_id: str) -> RunHandle:
        """The run's handle (404 when unknown)."""
        return self.service.handle(run_id)

    # -- operations -----------------------------------------------------------------------------
    async def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a live run; its detail."""
        h = await self.service.create_run(body)
        return self.detail(h.run_id)

    async def ingest(
        self, run_id: str, body: bytes, *, source: tuple[int, int] | None = None, media_type: str | None = None
    ) -> dict[str, Any]:
        """Ingest one request (`media_type`: its Content-Type, which picks the body's form); the 202 answer."""
        return await self.service.ingest(run_id, body, source=source, media_type=media_type)

    async def patch_model(self, run_id: str, body: Any) -> dict[str, Any]:
        """Adjust the run's model; the 202 answer."""
        return await self.service.patch_model(run_id, body)

    async def close_run(self, run_id: str) -> dict[str, Any]:
        """Close the run; its detail."""
        h = await self.service.close_run(run_id)
        return self.detail(h.run_id)

    async def snapshot(self, run_id: str) -> dict[str, Any]:
        """Snapshot the run now, with its artifacts."""
        return await self.service.snapshot(run_id)

    async def delete_run(self, run_id: str) -> dict[str, Any] | None:
        """Stop and forget the run (None when the engine does not hold it)."""
        return await self.service.delete_run(run_id)

    # -- reads ----------------------------------------------------------------------------------
    def detail(self, run_id: str) -> dict[str, Any]:
        """`GET /v1/runs/{id}` of a live run."""
        h = self.service.handle(run_id)
        run = h.run
        base = f"/v1/runs/{run_id}"
        reason = {"reason": h.reason} if h.reason is not None else {}
        return {
            "runId": run_id,
            "mode": "live",
            "status": run.status.value,
            **reason,
            "epoch": run.epoch,
            "seq": run.seq,
            "lastBin": run.last_bin,
            "watermark": run.watermark,
            "revision": run.revision,
            "modelRevision": run.model_revision,
            "grid": run.grid.to_wire(),
            "binMinutes": run.grid.bin_minutes,
            "createdUtc": h.created_utc,
            "links": {
                "self": base,
                "bins": f"{base}/bins",
                "stream": f"{base}/stream",
                "state": f"{base}/state/live",
                "close": f"{base}/close",
            },
        }

    def list_runs(self) -> list[dict[str, Any]]:
        """Every live run's detail, by id."""
        return [self.detail(run_id) for run_id in sorted(self.service.runs)]

    def state_source(self, run_id: str) -> StateSource:
        """A consistent view of the retained bins (read on the event loop, between two records)."""
        h = self.service.handle(run_id)
        run = h.run
        lo, hi = run.retained_range()
        matrix = run.V[:, lo - run.base : hi - run.base]
        gaps = run.node_gaps(lo, hi) if hi > lo else {}
        warnings = run.hooks.active() if isinstance(run.hooks, DerivedHooks) else ()
        return StateSource.from_matrix(
            run_id, h.model.graph, run.plan.names, matrix, first_bin=lo, gaps=gaps, grid=run.grid, warnings=warnings
        )

    def state(self, run_id: str, bin_index: int) -> dict[str, Any]:
        """`/state?binIndex=` of a live run."""
        return state_body(self.state_source(run_id), bin_index)

    def state_window(self, run_id: str, start: int, end: int) -> dict[str, Any]:
        """`/state_window` of a live run."""
        return state_window_body(self.state_source(run_id), start, end, self.state_window_max_bins)

    def state_live(self, run_id: str, window_bins: int = STATE_LIVE_WINDOW_BINS) -> dict[str, Any]:
        """`/state` at lastBin plus position and the last `window_bins` bins as a window (§12.4)."""
        return self.capture_state_live(run_id, window_bins)()

    def capture_state_live(
        self, run_id: str, window_bins: int = STATE_LIVE_WINDOW_BINS, *, copy: bool = False
    ) -> Callable[[], dict[str, Any]]:
        """`state_live` in two steps: the run's counters (and with `copy`, its bins from the window's
        look-back on) taken now, on the loop; the body built by the returned function, which may run
        in a thread when `copy` is set (the live matrix moves on under it)."""
        run = self.service.handle(run_id).run
        head = {
            "status": run.status.value,
            "epoch": run.epoch,
            "seq": run.seq,
            "revision": run.revision,
            "watermark": run.watermark,
            "lastBin": run.last_bin,
        }
        last = run.last_bin
        if last < 0:
            empty: dict[str, Any] = {
                "runId": run_id,
                "grid": run.grid.to_wire(),
                "binMinutes": run.grid.bin_minutes,
                "bin": None,
                "nodes": [],
                "warnings": [],
                "dataQuality": {"complete": True, "gaps": []},
                **head,
            }
            return lambda: empty
        src = self.state_source(run_id)
        start = max(src.first_bin, last - window_bins + 1)
        if copy:
            src = copy_from(src, max(src.first_bin, start - REQUIRED_LOOKBACK))

        def build() -> dict[str, Any]:
            body = state_body(src, last)
            window = state_window_body(src, start, last, max(window_bins, 1))
            body.update(head)
            body["window"] = {
                **window["window"],
                "timestampsUtc": window["timestampsUtc"],
                "nodes": window.get("nodes"),
                "series": window.get("series"),
            }
            return body

        return build


def copy_from(src: StateSource, first_bin: int) -> StateSource:
    """`src` from `first_bin` on, every array copied (the live matrix moves on under a thread)."""
    off = first_bin - src.first_bin
    return dataclasses.replace(
        src,
        series={sid: np.array(values[off:]) for sid, values in src.series.items()},
        first_bin=first_bin,
        gaps={node: np.array(mask[off:]) for node, mask in src.gaps.items()},
        warnings=tuple(src.warnings),
    )
