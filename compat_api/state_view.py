"""Time-travel state bodies (SPEC §12.4): one bin or a window of bins of a run, as the wire shows them.

Pure builders over a `StateSource` — a run's series (model series id → values over bins
`[first_bin, first_bin + n_bins)`), its ModelGraph, gap masks and warnings. No disk, no engine
state: finished runs feed it from their artifacts, the live engine from its retained matrix
(`StateSource.from_matrix`). Every number is rounded for the wire (§12.5) here and only here.

Decisions where the spec is silent:
- A bin outside the source's range is 422 `bin_out_of_range` (the live engine answers 409 itself
  for bins that left retention).
- `metrics{}` holds the node's semantic fields whose series exist (a model with `outputs:` may have
  left some out); a parallelism series that is missing counts as unknown (utilization null).
- Derived values look back up to 11 bins before the first requested one (the capacity window), so a
  bin's state does not depend on which window asked for it.
- `warnings[]` is the run's active warning set, unfiltered (aggregates only keep their first bins).
- `dataQuality.gaps[]` is one entry per node with zero-filled bins in range: `{nodeId, bins, reason}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine_live.derived.node_metrics import (
    NUMERIC_FIELDS,
    REQUIRED_LOOKBACK,
    NodeDerived,
    NodeInputs,
    derive,
    sla_summary,
    to_wire_list,
    to_wire_value,
)
from engine_live.errors import InvalidRequestError, TooLargeError
from engine_live.model.grid import Grid
from engine_live.model.series_defs import ModelGraph, TopoBinding
from engine_live.plan.compiler import ZERO

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
DEFAULT_WINDOW_MAX_BINS = 500


@dataclass(frozen=True)
class StateSource:
    """One run's values as state views read them. All arrays cover the same bins."""

    run_id: str
    graph: ModelGraph
    series: Mapping[str, NDArray[Any]]  # model series id → values
    first_bin: int = 0
    gaps: Mapping[str, NDArray[Any]] = field(default_factory=dict)  # topology node id → zero-filled
    warnings: Sequence[Mapping[str, Any]] = ()
    grid: Grid | None = None  # the grid to report; default graph.grid (a live run passes its own)

    @classmethod
    def from_matrix(
        cls,
        run_id: str,
        graph: ModelGraph,
        names: Sequence[str],
        matrix: NDArray[Any],
        first_bin: int = 0,
        **kw: Any,
    ) -> StateSource:
        """Views (no copies) of an evaluation matrix whose rows are `names` (e.g. plan.names)."""
        series = {name: matrix[i] for i, name in enumerate(names) if name != ZERO}
        return cls(run_id, graph, series, first_bin, **kw)

    @property
    def n_bins(self) -> int:
        """Bins held in `series`."""
        for values in self.series.values():
            return len(values)
        return 0

    @property
    def last_bin(self) -> int:
        """Index of the last bin held."""
        return self.first_bin + self.n_bins - 1

    @property
    def wire_grid(self) -> Grid:
        """The grid answers report (the run's own, or the model's)."""
        return self.grid or self.graph.grid


def state_body(src: StateSource, bin_index: int) -> dict[str, Any]:
    """`GET /state`: `{runId, grid, binMinutes, bin, nodes | series, warnings, dataQuality}`."""
    _check_bin(src, bin_index, "binIndex")
    grid = src.wire_grid
    body = _head(src)
    body["bin"] = {
        "index": bin_index,
        "startUtc": grid.bin_start(bin_index),
        "endUtc": grid.bin_start(bin_index + 1),
    }
    c = bin_index - src.first_bin
    if src.graph.topo:
        nodes = []
        for binding in src.graph.topo:
            derived = _derive(src, binding, bin_index, bin_index)
            metrics = {f: to_wire_value(float(src.series[sid][c])) for f, sid in _fields(src, binding)}
            node = {"id": binding.id, "kind": binding.kind, "metrics": metrics, "derived": derived.wire_bin(0)}
            node |= _by_class(src, binding, lambda values: to_wire_value(float(values[c])))
            nodes.append(node | binding.extras())
        body["nodes"] = nodes
    else:
        body["series"] = {sid: to_wire_value(float(v[c])) for sid, v in src.series.items()}
    body["warnings"] = [dict(w) for w in src.warnings]
    body["dataQuality"] = data_quality(src, bin_index, bin_index)
    return body


def state_window_body(
    src: StateSource, start: int, end: int, max_bins: int = DEFAULT_WINDOW_MAX_BINS
) -> dict[str, Any]:
    """`GET /state_window`: bins start..end inclusive, metrics and derived as arrays."""
    if end < start:
        raise InvalidRequestError(
            f"endBin {end} is before startBin {start}", code="invalid_window", startBin=start, endBin=end
        )
    if end - start + 1 > max_bins:
        raise TooLargeError(
            f"window of {end - start + 1} bins exceeds the limit of {max_bins}",
            limit=max_bins,
            requested=end - start + 1,
        )
    _check_bin(src, start, "startBin")
    _check_bin(src, end, "endBin")
    grid = src.wire_grid
    body = _head(src)
    body["window"] = {"startBin": start, "endBin": end}
    body["timestampsUtc"] = [grid.bin_start(i) for i in range(start, end + 1)]
    a, b = start - src.first_bin, end - src.first_bin + 1
    if src.graph.topo:
        nodes = []
        for binding in src.graph.topo:
            derived = _derive(src, binding, start, end)
            metrics = {f: to_wire_list(src.series[sid][a:b]) for f, sid in _fields(src, binding)}
            node = {"id": binding.id, "kind": binding.kind, "metrics": metrics, "derived": derived.wire_window()}
            node |= _by_class(src, binding, lambda values: to_wire_list(values[a:b]))
            nodes.append(node | binding.extras())
        body["nodes"] = nodes
    else:
        body["series"] = {sid: to_wire_list(v[a:b]) for sid, v in src.series.items()}
    body["warnings"] = [dict(w) for w in src.warnings]
    body["dataQuality"] = data_quality(src, start, end)
    return body


def _by_class(src: StateSource, binding: TopoBinding, pick: Callable[[NDArray[Any]], Any]) -> dict[str, Any]:
    """`{"byClass": {classId: {metric: pick(class row)}}}` for a class-bearing node (SPEC §14), else {}:
    the node's semantic metrics whose series carry classes (derived metrics stay per node)."""
    by_class: dict[str, dict[str, Any]] = {}
    for metric, sid in _fields(src, binding):
        for row in src.graph.class_rows(sid):
            if row in src.series:
                by_class.setdefault(src.graph.class_of[row][1], {})[metric] = pick(src.series[row])
    return {"byClass": by_class} if by_class else {}


def metrics_body(src: StateSource) -> dict[str, Any]:
    """`GET /metrics` of a run: the SLA summary per node and overall over every bin of the source."""
    body = _head(src)
    body["window"] = {"startBin": src.first_bin, "endBin": src.last_bin}
    if src.n_bins == 0:
        body.update(sla_summary({}))
        return body
    derived = {t.id: _derive(src, t, src.first_bin, src.last_bin) for t in src.graph.topo}
    body.update(sla_summary(derived))
    return body


def node_arrays(src: StateSource) -> dict[str, dict[str, FloatArray]]:
    """Full-precision per-node arrays over every bin: the semantic metrics and the numeric derived
    fields (NaN = null). Used by compare."""
    out: dict[str, dict[str, FloatArray]] = {}
    if src.n_bins == 0:
        return out
    for binding in src.graph.topo:
        arrays = {f: np.asarray(src.series[sid], dtype=np.float64) for f, sid in _fields(src, binding)}
        derived = _derive(src, binding, src.first_bin, src.last_bin)
        for wire, attr in NUMERIC_FIELDS:
            arrays[wire] = getattr(derived, attr)
        out[binding.id] = arrays
    return out


def data_quality(src: StateSource, start: int, end: int) -> dict[str, Any]:
    """`{complete, gaps[{nodeId, bins, reason}]}` over bins start..end inclusive."""
    a, b = start - src.first_bin, end - src.first_bin + 1
    gaps = []
    for node_id, mask in src.gaps.items():
        hit = np.flatnonzero(np.asarray(mask[a:b], dtype=np.bool_))
        if hit.size:
            gaps.append({"nodeId": node_id, "bins": [int(i) + start for i in hit], "reason": "data_gap"})
    return {"complete": not gaps, "gaps": gaps}


# ---- internals ---------------------------------------------------------------------------------
def _head(src: StateSource) -> dict[str, Any]:
    grid = src.wire_grid
    return {"runId": src.run_id, "grid": grid.to_wire(), "binMinutes": grid.bin_minutes}


def _check_bin(src: StateSource, index: int, name: str) -> None:
    if not src.first_bin <= index <= src.last_bin:
        raise InvalidRequestError(
            f"{name} {index} is outside the run's bins {src.first_bin}..{src.last_bin}",
            code="bin_out_of_range",
            bin=index,
            firstBin=src.first_bin,
            lastBin=src.last_bin,
        )


def _fields(src: StateSource, binding: TopoBinding) -> list[tuple[str, str]]:
    return [(f, sid) for f, sid in binding.fields.items() if sid in src.series]


def _derive(src: StateSource, binding: TopoBinding, start: int, end: int) -> NodeDerived:
    """Derived values of bins start..end (inclusive), with up to 11 bins of history before them."""
    lo = max(src.first_bin, start - REQUIRED_LOOKBACK)
    a, b = lo - src.first_bin, end - src.first_bin + 1
    metrics = {f: np.asarray(src.series[sid][a:b], dtype=np.float64) for f, sid in _fields(src, binding)}
    par: float | FloatArray = 1.0
    if isinstance(binding.parallelism, str):
        values = src.series.get(binding.parallelism)
        par = np.full(b - a, np.nan) if values is None else np.asarray(values[a:b], dtype=np.float64)
    elif isinstance(binding.parallelism, int | float):
        par = float(binding.parallelism)
    gap = src.gaps.get(binding.id)
    gap_slice = None if gap is None else np.asarray(gap[a:b], dtype=np.bool_)
    if not metrics and gap_slice is None and np.ndim(par) == 0:
        gap_slice = np.zeros(b - a, dtype=np.bool_)  # a node without series still has bins
    node = NodeInputs(binding.id, binding.kind, metrics, par, binding.sla_min, gap_slice, lookback=start - lo)
    return derive(node, src.wire_grid.bin_minutes)


__all__ = [
    "StateSource",
    "data_quality",
    "metrics_body",
    "node_arrays",
    "state_body",
    "state_window_body",
]
