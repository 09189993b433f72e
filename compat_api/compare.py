"""Run comparison math (SPEC §5, §12.14): MAE, SMAPE, Pearson and % change of the total.

Pure functions over arrays; the HTTP route and `flowtime compare A B` both call `compare_runs`.

Decisions where the spec is silent:
- Only bins where both values are finite are compared (`bins` counts them); with none, every
  statistic is null.
- Series are matched by model series id; node metrics by (topology node id, field), covering the
  semantic metrics and the numeric derived fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine_live.derived.node_metrics import to_wire_value
from engine_live.errors import CompareMismatchError

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ComparedRun:
    """What a comparison needs of a run: its grid, model series and node metrics."""

    run_id: str
    bin_minutes: int
    start: str | None
    series: Mapping[str, NDArray[Any]]  # model series id → values from bin 0
    node_metrics: Mapping[str, Mapping[str, NDArray[Any]]]  # node id → field → values


def series_stats(a: NDArray[Any], b: NDArray[Any]) -> dict[str, Any]:
    """Statistics of B against A over their common bins (from bin 0), rounded for the wire."""
    n = min(len(a), len(b))
    x = np.asarray(a[:n], dtype=np.float64)
    y = np.asarray(b[:n], dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out: dict[str, Any] = {
        "bins": int(x.size),
        "mae": None,
        "smape": None,
        "pearson": None,
        "percentDelta": None,
        "sumBase": None,
        "sumCompare": None,
    }
    if x.size == 0:
        return out
    diff = np.abs(y - x)
    denom = np.abs(x) + np.abs(y)
    terms = np.zeros_like(diff)
    np.divide(2.0 * diff, denom, out=terms, where=denom != 0)  # 0/0 → 0
    sum_a, sum_b = float(x.sum()), float(y.sum())
    out["mae"] = to_wire_value(float(diff.mean()))
    out["smape"] = to_wire_value(float(terms.mean()))
    out["pearson"] = _pearson(x, y)
    out["percentDelta"] = None if sum_a == 0 else to_wire_value((sum_b - sum_a) / abs(sum_a) * 100.0)
    out["sumBase"] = to_wire_value(sum_a)
    out["sumCompare"] = to_wire_value(sum_b)
    return out


def _pearson(x: FloatArray, y: FloatArray) -> float | None:
    dx, dy = x - x.mean(), y - y.mean()
    vx, vy = float(np.dot(dx, dx)), float(np.dot(dy, dy))
    if vx == 0 or vy == 0:
        return None
    r = float(np.dot(dx, dy)) / math.sqrt(vx * vy)
    return to_wire_value(max(-1.0, min(1.0, r)))


def check_comparable(base: ComparedRun, other: ComparedRun) -> None:
    """CompareMismatchError when the runs' binMinutes or grid starts differ."""
    if base.bin_minutes != other.bin_minutes:
        raise CompareMismatchError(f"binMinutes differ: {base.bin_minutes} vs {other.bin_minutes}")
    if base.start != other.start:
        raise CompareMismatchError(f"grid starts differ: {base.start} vs {other.start}")


def compare_runs(base: ComparedRun, other: ComparedRun) -> dict[str, Any]:
    """The diff body: `{baseRunId, compareRunId, binMinutes, start, bins, series[], nodes[]}`.
    Raises CompareMismatchError when binMinutes or start differ."""
    check_comparable(base, other)
    shared = [sid for sid in base.series if sid in other.series]
    series = [{"id": sid, **series_stats(base.series[sid], other.series[sid])} for sid in shared]
    nodes = []
    for node_id, fields in base.node_metrics.items():
        theirs = other.node_metrics.get(node_id)
        if theirs is None:
            continue
        metrics = {f: series_stats(v, theirs[f]) for f, v in fields.items() if f in theirs}
        nodes.append({"nodeId": node_id, "metrics": metrics})
    return {
        "baseRunId": base.run_id,
        "compareRunId": other.run_id,
        "binMinutes": base.bin_minutes,
        "start": base.start,
        "bins": min(_length(base), _length(other)),
        "series": series,
        "nodes": nodes,
        "onlyInBase": [sid for sid in base.series if sid not in other.series],
        "onlyInCompare": [sid for sid in other.series if sid not in base.series],
    }


def _length(run: ComparedRun) -> int:
    return max((len(v) for v in run.series.values()), default=0)


__all__ = ["ComparedRun", "check_comparable", "compare_runs", "series_stats"]
