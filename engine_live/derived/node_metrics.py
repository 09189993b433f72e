"""Derived metrics, capacity inference, SLA and colours per topology node (SPEC §3, §12.5).

Everything is vectorized over bins (no Python loop over bins). `NaN` means null. Inputs are whole
float64 series; the first `lookback` bins are history only (the 12-bin capacity window, the
previous queue depth of the checks) and are left out of every output.

Decisions where the spec is silent:
- A ratio is null when its numerator or denominator is missing or non-finite, or the denominator
  is 0; a non-finite result is null too.
- `utilization` uses the capacity series only (never `capacityInferred`); with no capacity the
  colour is gray with reason `no_capacity`, with capacity but no usable `served` `no_throughput`.
- `capacityInferred` ignores NaN in the 12-bin rolling max (window = bins t-11..t, shortened at
  the first available bin); where the inferred value is null, method and confidence are null.
- `slaMet` is evaluated only where arrivals and served are both present and finite, the bin is
  not a data gap and the node is not a dlq (`slaEvaluated`); elsewhere `slaMet` is False and the
  wire value null. A data-gap bin is gray (`data_gap`) for every kind, dlq included.
- Wire rounding works on the shortest decimal text of the double (so 0.1234565 → 0.123457).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

if TYPE_CHECKING:
    from engine_live.model.series_defs import TopoBinding

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
ObjArray = NDArray[np.object_]

KINDS = frozenset({"service", "serviceWithBuffer", "queue", "dlq", "router", "sink"})
METRICS = frozenset(
    {
        "arrivals",
        "served",
        "errors",
        "queueDepth",
        "capacity",
        "externalDemand",
        "attempts",
        "failures",
        "processingTimeMsSum",
        "servedCount",
    }
)
CAPACITY_WINDOW = 12
REQUIRED_LOOKBACK = CAPACITY_WINDOW - 1  # history bins a caller should pass for exact results
SLA_RATIO = 0.95

# (wire name, attribute) of the numeric derived fields, in wire order
NUMERIC_FIELDS: tuple[tuple[str, str], ...] = (
    ("utilization", "utilization"),
    ("queueTimeMs", "queue_time_ms"),
    ("latencyMinutes", "latency_minutes"),
    ("serviceTimeMs", "service_time_ms"),
    ("cycleTimeMs", "cycle_time_ms"),
    ("flowEfficiency", "flow_efficiency"),
    ("throughputRatio", "throughput_ratio"),
    ("retryTax", "retry_tax"),
    ("capacityInferred", "capacity_inferred"),
)


@dataclass(frozen=True)
class NodeInputs:
    """One node's input series (history included) for `derive`."""

    node_id: str
    kind: str
    metrics: Mapping[str, NDArray[Any]]
    parallelism: NDArray[Any] | float = 1.0
    sla_min: float | None = None
    gap: NDArray[Any] | None = None
    lookback: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"node {self.node_id!r}: unknown kind {self.kind!r}")
        lengths = {len(series) for series in self.metrics.values()}
        if self.gap is not None:
            lengths.add(len(self.gap))
        if np.ndim(self.parallelism) > 0:
            lengths.add(len(np.asarray(self.parallelism)))
        if len(lengths) > 1:
            raise ValueError(f"node {self.node_id!r}: series lengths differ: {sorted(lengths)}")
        if not 0 <= self.lookback <= self.length:
            raise ValueError(f"node {self.node_id!r}: lookback {self.lookback} outside 0..{self.length}")

    @property
    def length(self) -> int:
        """Bins in the inputs, history included (0 when the node has no series at all)."""
        for series in self.metrics.values():
            return len(series)
        if self.gap is not None:
            return len(self.gap)
        return len(np.asarray(self.parallelism)) if np.ndim(self.parallelism) > 0 else 0

    def series(self, name: str) -> FloatArray | None:
        """The whole input series (history included) as float64, or None when absent."""
        series = self.metrics.get(name)
        return None if series is None else np.asarray(series, dtype=np.float64)

    def parallelism_series(self) -> FloatArray:
        """Parallelism per bin (a constant broadcast)."""
        return np.broadcast_to(np.asarray(self.parallelism, dtype=np.float64), (self.length,))

    def gap_series(self) -> BoolArray:
        """The data-gap mask per bin (all False when none was given)."""
        if self.gap is None:
            return np.zeros(self.length, dtype=np.bool_)
        return np.asarray(self.gap, dtype=np.bool_)


@dataclass(frozen=True)
class NodeDerived:
    """Derived values of the output bins (history excluded). NaN = null; string arrays hold str/None."""

    utilization: FloatArray
    queue_time_ms: FloatArray
    latency_minutes: FloatArray
    service_time_ms: FloatArray
    cycle_time_ms: FloatArray
    flow_efficiency: FloatArray
    throughput_ratio: FloatArray
    retry_tax: FloatArray
    capacity_inferred: FloatArray
    capacity_method: ObjArray  # 'saturation' | 'rolling_max' | None
    capacity_confidence: ObjArray  # 'high' | 'low' | None
    sla_met: BoolArray
    sla_evaluated: BoolArray
    color: ObjArray  # green | yellow | red | gray | dlq
    color_reason: ObjArray  # utilization | latency | no_capacity | no_throughput | no_sla | data_gap | dlq

    @property
    def n_bins(self) -> int:
        """Output bins."""
        return len(self.utilization)

    def wire_bin(self, i: int) -> dict[str, Any]:
        """The `derived{}` object of output bin i, rounded for the wire."""
        out: dict[str, Any] = {
            wire_key: to_wire_value(float(getattr(self, attr)[i])) for wire_key, attr in NUMERIC_FIELDS
        }
        out["capacityMethod"] = self.capacity_method[i]
        out["capacityConfidence"] = self.capacity_confidence[i]
        out["slaMet"] = bool(self.sla_met[i]) if self.sla_evaluated[i] else None
        out["color"] = self.color[i]
        out["colorReason"] = self.color_reason[i]
        return out

    def wire_window(self, start: int = 0, stop: int | None = None) -> dict[str, list[Any]]:
        """Arrays per field over output bins [start, stop) for `/state_window`."""
        sl = slice(start, stop)
        out: dict[str, list[Any]] = {
            wire_key: to_wire_list(getattr(self, attr)[sl]) for wire_key, attr in NUMERIC_FIELDS
        }
        out["capacityMethod"] = self.capacity_method[sl].tolist()
        out["capacityConfidence"] = self.capacity_confidence[sl].tolist()
        sla: ObjArray = self.sla_met[sl].astype(object)
        sla[~self.sla_evaluated[sl]] = None
        out["slaMet"] = sla.tolist()
        out["color"] = self.color[sl].tolist()
        out["colorReason"] = self.color_reason[sl].tolist()
        return out


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.full(num.shape, np.nan)
    ok = np.isfinite(num) & np.isfinite(den) & (den != 0)
    np.divide(num, den, out=out, where=ok)
    out[~np.isfinite(out)] = np.nan
    return out


def capacity_inference(node: NodeInputs) -> tuple[FloatArray, BoolArray, BoolArray]:
    """Over all input bins: (capacityInferred, saturated, applicable). Not applicable when the node
    has a capacity series or no served series; the value is NaN where not applicable or unknown."""
    n = node.length
    served = node.series("served")
    if "capacity" in node.metrics or served is None or n == 0:  # n == 0: a live run without a bin yet
        return np.full(n, np.nan), np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_)
    saturated = np.zeros(n, dtype=np.bool_)
    demand, queue = node.series("externalDemand"), node.series("queueDepth")
    if demand is not None:
        saturated |= demand > served
    if queue is not None:
        saturated |= queue > 0
    padded = np.concatenate([np.full(CAPACITY_WINDOW - 1, np.nan), served])
    rolling = np.fmax.reduce(sliding_window_view(padded, CAPACITY_WINDOW), axis=1)
    # + 0.0: numpy's fmax kernels (reduce, scalar, SIMD) disagree on the sign of a ±0 tie; one zero
    value = np.where(saturated, served, rolling) + 0.0
    value[~np.isfinite(value)] = np.nan
    return value, saturated, np.ones(n, dtype=np.bool_)


def derive(node: NodeInputs, bin_minutes: int) -> NodeDerived:
    """Derived metrics and colours of `node` for its output bins (inputs minus `lookback`)."""
    n, lb = node.length, node.lookback
    missing = np.full(n, np.nan)

    def get(name: str) -> FloatArray:
        series = node.series(name)
        return missing if series is None else series

    arrivals, served, queue = get("arrivals"), get("served"), get("queueDepth")
    bin_ms = float(bin_minutes) * 60000.0
    with np.errstate(all="ignore"):
        denom = get("capacity") * node.parallelism_series()
        utilization = _ratio(served, denom)
        per_served = _ratio(queue, served)
        queue_time = per_served * bin_ms
        latency = per_served * float(bin_minutes)
        service_time = _ratio(get("processingTimeMsSum"), get("servedCount"))
        both_missing = np.isnan(queue_time) & np.isnan(service_time)
        cycle = np.where(
            both_missing, np.nan, np.nan_to_num(queue_time, nan=0.0) + np.nan_to_num(service_time, nan=0.0)
        )
        cycle[~np.isfinite(cycle)] = np.nan
        flow_eff = _ratio(service_time, cycle)
        throughput = np.clip(_ratio(served, arrivals), 0.0, 1.0)
        attempts = get("attempts")
        retry_tax = np.maximum(_ratio(attempts - served, attempts), 0.0)
        cap_value, saturated, applicable = capacity_inference(node)
        known = applicable & np.isfinite(cap_value)
        method = _labels(known, saturated, "saturation", "rolling_max")
        confidence = _labels(known, saturated, "high", "low")
        gap = node.gap_series()
        sla_eval = np.isfinite(arrivals) & np.isfinite(served) & ~gap & (node.kind != "dlq")
        sla_met = sla_eval & ((arrivals == 0) | (_ratio(served, arrivals) >= SLA_RATIO))

    out = slice(lb, None)
    color, reason = _colors(node, utilization[out], denom[out], latency[out], gap[out])
    return NodeDerived(
        utilization=utilization[out],
        queue_time_ms=queue_time[out],
        latency_minutes=latency[out],
        service_time_ms=service_time[out],
        cycle_time_ms=cycle[out],
        flow_efficiency=flow_eff[out],
        throughput_ratio=throughput[out],
        retry_tax=retry_tax[out],
        capacity_inferred=cap_value[out],
        capacity_method=method[out],
        capacity_confidence=confidence[out],
        sla_met=sla_met[out],
        sla_evaluated=sla_eval[out],
        color=color,
        color_reason=reason,
    )


def _labels(known: BoolArray, cond: BoolArray, yes: str, no: str) -> ObjArray:
    out: ObjArray = np.full(len(known), None, dtype=object)
    out[known & cond] = yes
    out[known & ~cond] = no
    return out


def _colors(
    node: NodeInputs, util: FloatArray, denom: FloatArray, latency: FloatArray, gap: BoolArray
) -> tuple[ObjArray, ObjArray]:
    m = len(util)
    color: ObjArray = np.full(m, "gray", dtype=object)
    reason: ObjArray = np.full(m, "", dtype=object)
    if node.kind == "dlq":
        color[:] = "dlq"
        reason[:] = "dlq"
    elif node.kind == "queue":
        sla = node.sla_min
        if sla is None or not math.isfinite(sla):
            reason[:] = "no_sla"
        else:
            has = np.isfinite(latency)
            reason[:] = np.where(has, "latency", "no_throughput")
            color[has & (latency <= sla)] = "green"
            color[has & (latency > sla) & (latency <= 1.5 * sla)] = "yellow"
            color[has & (latency > 1.5 * sla)] = "red"
    else:
        has = np.isfinite(util)
        no_cap = ~np.isfinite(denom) | (denom == 0)
        reason[:] = np.where(has, "utilization", np.where(no_cap, "no_capacity", "no_throughput"))
        color[has & (util < 0.7)] = "green"
        color[has & (util >= 0.7) & (util < 0.9)] = "yellow"
        color[has & (util >= 0.9)] = "red"
    color[gap] = "gray"
    reason[gap] = "data_gap"
    return color, reason


# ---- wire rounding (§12.5) -------------------------------------------------------------------
_DEC_CTX = Context(prec=40, rounding=ROUND_HALF_UP)
_QUANTUM = Decimal("0.000001")


def to_wire_value(x: float) -> float | None:
    """Round half away from zero to 6 decimals of the shortest decimal text of x; |v| < 1e-9 → 0;
    non-finite → None."""
    if not math.isfinite(x):
        return None
    if abs(x) < 1e15:  # larger doubles have no digits beyond the 6th decimal to round
        x = float(Decimal(repr(x)).quantize(_QUANTUM, context=_DEC_CTX))
    return 0.0 if abs(x) < 1e-9 else x


def round_wire(values: Iterable[float] | NDArray[Any]) -> FloatArray:
    """Vectorized `to_wire_value`, NaN for null. Exact ties and |v| ≥ 1e9 take the decimal path."""
    a = np.asarray(values, dtype=np.float64)
    out = np.full(a.shape, np.nan)
    with np.errstate(all="ignore"):
        finite = np.isfinite(a)
        absa = np.where(finite, np.abs(a), 0.0)
        scaled = absa * 1e6
        floor = np.floor(scaled)
        frac = scaled - floor
        # |float scaled − decimal scaled| ≤ scaled·2^-52: outside this band the direction is certain
        near_tie = np.abs(frac - 0.5) <= 1e-6 + scaled * 1e-15
        fast = finite & (absa < 1e9) & ~near_tie
        rounded = np.where(frac > 0.5, floor + 1.0, floor) / 1e6
        out[fast] = np.copysign(rounded[fast], a[fast])
    slow = np.flatnonzero(finite & ~fast)
    if slow.size:
        flat_in, flat_out = a.reshape(-1), out.reshape(-1)
        flat_out[slow] = [to_wire_value(v) for v in flat_in[slow].tolist()]
    out[np.abs(out) < 1e-9] = 0.0
    return out


def to_wire_list(values: Iterable[float] | NDArray[Any]) -> list[float | None]:
    """Vectorized `to_wire_value` as a JSON-ready list."""
    rounded = round_wire(values)
    obj: ObjArray = rounded.astype(object)
    obj[np.isnan(rounded)] = None
    result: list[float | None] = obj.tolist()
    return result


def sla_summary(nodes: Mapping[str, NodeDerived], start: int = 0, stop: int | None = None) -> dict[str, Any]:
    """Share of evaluated bins meeting the SLA over output bins [start, stop).

    Per node: `{nodeId, binsEvaluated, binsMet, percentMet}` (percent 0..100, null when nothing
    was evaluated), in the mapping's order; `overall` pools every node-bin (a node with more
    evaluated bins weighs more). Bins outside `slaEvaluated` (gaps, dlq, missing data) don't count.
    """
    rows: list[dict[str, Any]] = []
    total_eval = total_met = 0
    for node_id, derived in nodes.items():
        evaluated = derived.sla_evaluated[start:stop]
        n_eval = int(np.count_nonzero(evaluated))
        n_met = int(np.count_nonzero(derived.sla_met[start:stop] & evaluated))
        total_eval += n_eval
        total_met += n_met
        rows.append(
            {"nodeId": node_id, "binsEvaluated": n_eval, "binsMet": n_met, "percentMet": _percent(n_met, n_eval)}
        )
    return {
        "overall": {"binsEvaluated": total_eval, "binsMet": total_met, "percentMet": _percent(total_met, total_eval)},
        "nodes": rows,
    }


def _percent(met: int, evaluated: int) -> float | None:
    return None if evaluated == 0 else to_wire_value(100.0 * met / evaluated)


def node_inputs(binding: TopoBinding, series: Mapping[str, np.ndarray], gap: np.ndarray | None = None) -> NodeInputs:
    """A topology node's inputs for `derive` (the per-node reference of `derived.stack`), from series by id."""
    metrics = {field_name: series[sid] for field_name, sid in binding.fields.items() if sid in series}
    par: float | np.ndarray = 1.0
    if isinstance(binding.parallelism, str):
        par = series[binding.parallelism]
    elif isinstance(binding.parallelism, int | float):
        par = float(binding.parallelism)
    return NodeInputs(binding.id, binding.kind, metrics, par, binding.sla_min, gap)
