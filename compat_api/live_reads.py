"""Reads of live runs: detail, listing, and the state views of their retained bins (SPEC §12.3, §12.4).
Everything here runs on the event loop between two log records, so every read is consistent."""

from __future__ import annotations

from typing import Any

from compat_api.live_handle import RunHandle
from compat_api.settings import Settings
from compat_api.state_view import StateSource, state_body, state_window_body
from engine_live.derived.live_hooks import DerivedHooks
from engine_live.errors import NotFoundError, RunClosedError


class LiveReads:
    settings: Settings
    runs: dict[str, RunHandle]
    _progress: dict[str, int]

    def recovery_progress(self) -> dict[str, int]:
        return dict(self._progress)

    def handle(self, run_id: str) -> RunHandle:
        h = self.runs.get(run_id)
        if h is None:
            raise NotFoundError(f"unknown live run '{run_id}'", runId=run_id)
        return h

    def kafka_offsets(self) -> dict[int, int]:
        """Per partition, the highest Kafka offset any run has logged: records at or below are skipped."""
        out: dict[int, int] = {}
        for h in self.runs.values():
            for part, off in h.kafka_offsets.items():
                out[part] = max(out.get(part, -1), off)
        return out

    def knows(self, run_id: str) -> bool:
        return run_id in self.runs

    def detail(self, run_id: str) -> dict[str, Any]:
        h = self.handle(run_id)
        r = h.run
        base = f"/v1/runs/{run_id}"
        return {
            "runId": run_id,
            "mode": "live",
            "status": r.status.value,
            "epoch": r.epoch,
            "seq": r.seq,
            "lastBin": r.last_bin,
            "watermark": r.watermark,
            "revision": r.revision,
            "modelRevision": r.model_revision,
            "grid": r.grid.to_wire(),
            "binMinutes": r.grid.bin_minutes,
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
        return [self.detail(rid) for rid in sorted(self.runs)]

    def state_source(self, run_id: str) -> StateSource:
        """A consistent view of the retained bins (read on the event loop, between two records)."""
        h = self.handle(run_id)
        run = h.run
        lo, hi = run.retained_range()
        matrix = run.V[:, lo - run.base : hi - run.base]
        gaps = run.node_gaps(lo, hi) if hi > lo else {}
        warnings = run.hooks.active() if isinstance(run.hooks, DerivedHooks) else ()
        return StateSource.from_matrix(
            run_id, h.graph, run.plan.names, matrix, first_bin=lo, gaps=gaps, grid=run.grid, warnings=warnings
        )

    def state(self, run_id: str, bin_index: int) -> dict[str, Any]:
        return state_body(self.state_source(run_id), bin_index)

    def state_window(self, run_id: str, start: int, end: int) -> dict[str, Any]:
        return state_window_body(self.state_source(run_id), start, end, self.settings.state_window_max_bins)

    def state_live(self, run_id: str, window_bins: int = 288) -> dict[str, Any]:
        """`/state` at lastBin plus position and the last `window_bins` bins as a window (§12.4)."""
        h = self.handle(run_id)
        run = h.run
        src = self.state_source(run_id)
        head = {
            "status": run.status.value,
            "epoch": run.epoch,
            "seq": run.seq,
            "revision": run.revision,
            "watermark": run.watermark,
            "lastBin": run.last_bin,
        }
        if run.last_bin < 0:
            return {
                "runId": run_id,
                "grid": run.grid.to_wire(),
                "binMinutes": run.grid.bin_minutes,
                "bin": None,
                "nodes": [],
                "warnings": [],
                "dataQuality": {"complete": True, "gaps": []},
                **head,
            }
        body = state_body(src, run.last_bin)
        start = max(src.first_bin, run.last_bin - window_bins + 1)
        window = state_window_body(src, start, run.last_bin, max(window_bins, 1))
        body.update(head)
        body["window"] = {
            **window["window"],
            "timestampsUtc": window["timestampsUtc"],
            "nodes": window.get("nodes"),
            "series": window.get("series"),
        }
        return body

    def ensure_open(self, run_id: str) -> RunHandle:
        h = self.handle(run_id)
        if not h.run.status.is_open:
            raise RunClosedError(f"run '{run_id}' is {h.run.status.value}", runId=run_id)
        return h
