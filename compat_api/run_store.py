"""Finished runs on disk (`<dataDir>/runs/<runId>/`, SPEC §4): listing, detail, files, loaded views.

A folder counts only when its `manifest.json` (written last) exists. Parsed runs (graph + series)
live in a small LRU keyed by run id and the manifest's mtime, so a rewritten folder is re-read.

Decisions where the spec is silent:
- Artifact series ids `<node>@<NODE>@DEFAULT` map back to model series ids by their first part.
- A finished run's gap masks come from its `data_gap` warnings, which keep only their first bins:
  later gap bins of a long gap are not grey in a finished run's state.
- Run ids must match `^[A-Za-z0-9_.-]{1,128}$` (anything else is 404, never a path outside runs/).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from compat_api.compare import ComparedRun
from compat_api.state_view import StateSource, node_arrays
from engine_live.errors import FlowTimeError, InvalidRequestError, ModelError, NotFoundError
from engine_live.model.build import load_graph
from engine_live.model.grid import Grid, parse_utc
from engine_live.model.series_defs import ModelGraph
from engine_live.plan.run_result import model_series_id
from snapshot_writer.artifact_reader import is_complete, read_manifest, read_run_json, read_run_series

RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
DEFAULT_CACHE_SIZE = 8
SUMMARY_CACHE_SIZE = 4096


def run_links(run_id: str) -> dict[str, str]:
    """The API links of a finished run."""
    base = f"/v1/runs/{run_id}"
    return {
        "self": base,
        "state": f"{base}/state",
        "stateWindow": f"{base}/state_window",
        "metrics": f"{base}/metrics",
        "graph": f"{base}/graph",
        "index": f"{base}/index",
        "model": f"{base}/model",
        "series": f"{base}/series",
    }


@dataclass(frozen=True)
class LoadedRun:
    """A finished run read back: its run.json, graph and series by model series id."""

    run_id: str
    run_dir: Path
    run_json: dict[str, Any]
    graph: ModelGraph
    series: dict[str, NDArray[np.float64]]

    @property
    def grid(self) -> Grid:
        """The run's grid, with `bins` from run.json when it has them."""
        g = self.run_json.get("grid") or {}
        graph_grid = self.graph.grid
        return Grid(g.get("bins", graph_grid.bins), graph_grid.bin_size, graph_grid.bin_unit, graph_grid.start)

    def telemetry_series(self) -> dict[str, NDArray[np.float64]]:
        """The run's series of the model's telemetry-fed ids."""
        return {sid: self.series[sid] for sid in self.graph.telemetry_ids() if sid in self.series}

    def source(self) -> StateSource:
        """The run as a `StateSource` for the state views (gap masks from its `data_gap` warnings)."""
        return StateSource(
            self.run_id,
            self.graph,
            self.series,
            0,
            gap_masks(self.run_json, self.grid),
            tuple(self.run_json.get("warnings") or ()),
            self.grid,
        )

    def compared(self) -> ComparedRun:
        """The run as a `ComparedRun` for `/v1/compare`."""
        return ComparedRun(self.run_id, self.grid.bin_minutes, self.grid.start, self.series, node_arrays(self.source()))


def gap_masks(run_json: Mapping[str, Any], grid: Grid) -> dict[str, NDArray[np.bool_]]:
    """Per node id, a mask over the grid's bins of the bins its `data_gap` warnings name."""
    n = grid.bins or 0
    out: dict[str, NDArray[np.bool_]] = {}
    for w in run_json.get("warnings") or ():
        node_id = w.get("nodeId")
        if w.get("code") != "data_gap" or not isinstance(node_id, str):
            continue
        mask = out.setdefault(node_id, np.zeros(n, dtype=np.bool_))
        for b in w.get("bins") or ():
            if isinstance(b, int) and 0 <= b < n:
                mask[b] = True
    return out


def load_run_graph(run_dir: Path, inputs_dir: Path | None = None) -> ModelGraph:
    """The graph of a run's spec.yaml; `file:` sources resolve in `model/`, else in `inputs_dir`."""
    spec = (run_dir / "spec.yaml").read_text(encoding="utf-8")
    try:
        return load_graph(spec, base_dir=run_dir / "model")
    except ModelError:
        if inputs_dir is None:
            raise
        return load_graph(spec, base_dir=inputs_dir)


def load_run_dir(run_dir: Path, inputs_dir: Path | None = None) -> LoadedRun:
    """Read a complete run folder (also used by the CLI). Raises NotFoundError when incomplete."""
    if not is_complete(run_dir):
        raise NotFoundError(f"run folder {run_dir.name!r} has no complete artifact set", runId=run_dir.name)
    run_json = read_run_json(run_dir)
    graph = load_run_graph(run_dir, inputs_dir)
    series = {model_series_id(k): v for k, v in read_run_series(run_dir).items()}
    return LoadedRun(str(run_json.get("runId", run_dir.name)), run_dir, run_json, graph, series)


def summary_of(run_dir: Path) -> dict[str, Any]:
    """The list summary of a complete run folder, from its run.json and manifest."""
    run, manifest = read_run_json(run_dir), read_manifest(run_dir)
    run_id = str(run.get("runId", run_dir.name))
    grid = run.get("grid") or {}
    return {
        "runId": run_id,
        "mode": run.get("mode"),
        "status": run.get("status"),
        "createdUtc": run.get("createdUtc"),
        "templateId": (manifest.get("provenance") or {}).get("templateId"),
        "grid": grid,
        "binMinutes": grid.get("binMinutes"),
        "modelHash": run.get("modelHash"),
        "scenarioHash": run.get("scenarioHash"),
        "warningCount": len(run.get("warnings") or ()),
        "links": run_links(run_id),
    }


def parse_created_after(text: str | None) -> datetime | None:
    """A `createdAfter` filter as a UTC datetime (None stays None); InvalidRequestError if malformed."""
    if text is None:
        return None
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise InvalidRequestError(f"createdAfter: {exc}", code="invalid_timestamp") from None


def filter_runs(
    items: Iterable[Mapping[str, Any]],
    *,
    mode: str | None = None,
    status: str | None = None,
    template_id: str | None = None,
    created_after: str | None = None,
) -> list[dict[str, Any]]:
    """Runs matching every given filter, newest first (by createdUtc, then runId)."""
    after = parse_created_after(created_after)
    out = []
    for item in items:
        if mode is not None and item.get("mode") != mode:
            continue
        if status is not None and item.get("status") != status:
            continue
        if template_id is not None and item.get("templateId") != template_id:
            continue
        if after is not None and not _created_after(item.get("createdUtc"), after):
            continue
        out.append(dict(item))
    out.sort(key=lambda r: (str(r.get("createdUtc") or ""), str(r.get("runId"))), reverse=True)
    return out


def _created_after(created: Any, after: datetime) -> bool:
    try:
        return isinstance(created, str) and parse_utc(created) > after
    except ValueError:
        return False


def paginate(items: list[dict[str, Any]], page: int, page_size: int) -> dict[str, Any]:
    """Page `page` (1-based) of `items`, with the total count and the paging fields."""
    start = (page - 1) * page_size
    return {
        "items": items[start : start + page_size],
        "total": len(items),
        "page": page,
        "pageSize": page_size,
    }


class RunStore:
    """Complete run folders under `runs_dir`, with bounded caches. Safe to share between threads."""

    def __init__(self, runs_dir: Path, inputs_dir: Path | None = None, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.runs_dir = runs_dir
        self.inputs_dir = inputs_dir
        self.cache_size = cache_size
        self._loaded: OrderedDict[str, tuple[int, LoadedRun]] = OrderedDict()
        self._summaries: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def run_dir(self, run_id: str) -> Path:
        """The folder of a complete run, else NotFoundError."""
        if RUN_ID_RE.match(run_id) and run_id not in (".", ".."):
            path = self.runs_dir / run_id
            if is_complete(path):
                return path
        raise NotFoundError(f"run {run_id!r} not found", runId=run_id)

    def exists(self, run_id: str) -> bool:
        """True when `run_id` names a complete run."""
        try:
            self.run_dir(run_id)
        except NotFoundError:
            return False
        return True

    def _stamp(self, run_dir: Path) -> int:
        return (run_dir / "manifest.json").stat().st_mtime_ns

    def summaries(self) -> list[dict[str, Any]]:
        """A summary of every complete run (unordered)."""
        if not self.runs_dir.is_dir():
            return []
        out = []
        for entry in self.runs_dir.iterdir():
            if entry.is_dir() and is_complete(entry):
                try:
                    out.append(self.summary(entry.name))
                except (OSError, ValueError, FlowTimeError):
                    continue  # a folder that vanished or is unreadable is skipped
        return out

    def summary(self, run_id: str) -> dict[str, Any]:
        """The run's list summary (cached until its manifest changes); NotFoundError when absent."""
        run_dir = self.run_dir(run_id)
        stamp = self._stamp(run_dir)
        with self._lock:
            hit = self._summaries.get(run_id)
            if hit is not None and hit[0] == stamp:
                self._summaries.move_to_end(run_id)
                return dict(hit[1])
        summary = summary_of(run_dir)
        with self._lock:
            self._summaries[run_id] = (stamp, summary)
            while len(self._summaries) > SUMMARY_CACHE_SIZE:
                self._summaries.popitem(last=False)
        return dict(summary)

    def detail(self, run_id: str) -> dict[str, Any]:
        """The run's summary with its warnings, series list and manifest."""
        run_dir = self.run_dir(run_id)
        run = read_run_json(run_dir)
        return {
            **self.summary(run_id),
            "warnings": run.get("warnings") or [],
            "series": run.get("series") or [],
            "manifest": read_manifest(run_dir),
        }

    def load(self, run_id: str) -> LoadedRun:
        """The run read back as a `LoadedRun` (LRU-cached until its manifest changes)."""
        run_dir = self.run_dir(run_id)
        stamp = self._stamp(run_dir)
        with self._lock:
            hit = self._loaded.get(run_id)
            if hit is not None and hit[0] == stamp:
                self._loaded.move_to_end(run_id)
                return hit[1]
        loaded = load_run_dir(run_dir, self.inputs_dir)
        with self._lock:
            self._loaded[run_id] = (stamp, loaded)
            while len(self._loaded) > self.cache_size:
                self._loaded.popitem(last=False)
        return loaded

    def read_json(self, run_id: str, relpath: str) -> dict[str, Any]:
        """A JSON file of the run folder by relative path; NotFoundError when it is missing."""
        path = self.run_dir(run_id) / relpath
        if not path.is_file():
            raise NotFoundError(f"run {run_id!r} has no {relpath}", runId=run_id)
        data: dict[str, Any] = orjson.loads(path.read_bytes())
        return data

    def model_text(self, run_id: str) -> str:
        """The model the run ran (its `spec.yaml`)."""
        return (self.run_dir(run_id) / "spec.yaml").read_text(encoding="utf-8")

    def series_entry(self, run_id: str, series_id: str) -> dict[str, Any]:
        """The series/index.json entry of `series_id` (artifact id, or model series id)."""
        entries = self.read_json(run_id, "series/index.json").get("series") or []
        for entry in entries:
            if entry.get("id") == series_id:
                return dict(entry)
        for entry in entries:
            if model_series_id(str(entry.get("id"))) == series_id:
                return dict(entry)
        raise NotFoundError(f"run {run_id!r} has no series {series_id!r}", runId=run_id, seriesId=series_id)


__all__ = [
    "LoadedRun",
    "RunStore",
    "filter_runs",
    "gap_masks",
    "load_run_dir",
    "load_run_graph",
    "paginate",
    "run_links",
    "summary_of",
]
