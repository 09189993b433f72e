"""Derived metrics and colours of every topology node at once, on a stacked (nodes × bins) block.

The same results as `derived.derive` per node, bit for bit (SPEC §3, §12.5), but computed with a
handful of numpy operations over (k nodes × w bins) arrays instead of a Python loop over nodes:

- `StackLayout.from_plan(plan)` (once per plan): per semantic field a row-index array into the run
  matrix `V` plus a presence mask, kinds as codes, parallelism as constants or rows, slaMin, and
  the telemetry series each node's data-gap mask is built from (any of its fields zero-filled).
- `layout.gather(V, base, t0, t1, gaps)` reads bins [t0, t1) plus up to `history` bins before t0
  (clipped at bin `base`, i.e. bin 0 of a whole-run matrix) and runs capacity inference over the
  whole block, its 12-bin rolling max reading the 11 bins of `served` before each block column.
  `layout.derive_block(...)` adds every metric, colour and reason for [t0, t1).
- `to_wire_bins(stacked)` rounds the whole block once (`round_wire`) and builds, per bin, the
  per-node camelCase `derived{}` dicts (non-finite → None), equal to `NodeDerived.wire_bin`.

A node lacking a field reads a NaN row, which every formula of `derive` treats exactly like an
absent series (comparisons with NaN are false, ratios of NaN are null). `history` defaults to
`FLAG_HISTORY` (3), the block columns the warning checks of live_hooks read before a bin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from engine_live.derived.node_metrics import (
    CAPACITY_WINDOW,
    NUMERIC_FIELDS,
    SLA_RATIO,
    BoolArray,
    FloatArray,
    ObjArray,
    _ratio,
    round_wire,
)

IntArray = NDArray[np.intp]
GapFn = Callable[[int, int], NDArray[np.bool_]]  # (t0, t1) → (telemetry series × bins), True = gap
STACK_FIELDS = (
    "arrivals",
    "served",
    "queueDepth",
    "capacity",
    "processingTimeMsSum",
    "servedCount",
    "attempts",
    "externalDemand",
)
FLAG_HISTORY = 3  # bins before a flagged bin its checks read (a 3-bin streak of a queue delta)
KIND_CODES = {"service": 0, "serviceWithBuffer": 1, "router": 2, "sink": 3, "queue": 4, "dlq": 5}
QUEUE_KIND_CODES = (1, 4, 5)  # serviceWithBuffer, queue, dlq (node_checks.QUEUE_KINDS)
COLORS: ObjArray = np.array(["green", "yellow", "red", "gray", "dlq"], dtype=object)
GREEN, YELLOW, RED, GRAY, DLQ = range(5)
REASONS: ObjArray = np.array(
    ["utilization", "latency", "no_capacity", "no_throughput", "no_sla", "data_gap", "dlq"], dtype=object
)
R_UTIL, R_LAT, R_NOCAP, R_NOTHR, R_NOSLA, R_GAP, R_DLQ = range(7)
WIRE_KEYS = (*(w for w, _ in NUMERIC_FIELDS), "capacityMethod", "capacityConfidence", "slaMet", "color", "colorReason")
_METHOD: ObjArray = np.array([None, "rolling_max", "saturation"], dtype=object)
_CONFIDENCE: ObjArray = np.array([None, "low", "high"], dtype=object)


class Binding(Protocol):
    """What the layout needs of a topology node (`series_defs.TopoBinding` has these attributes)."""

    @property
    def id(self) -> str:
        """Node id."""

    @property
    def kind(self) -> str:
        """Topology kind."""

    @property
    def fields(self) -> dict[str, str]:
        """Semantic field → series id."""

    @property
    def parallelism(self) -> float | str | None:
        """A constant, a series id, or None (1)."""

    @property
    def sla_min(self) -> float | None:
        """slaMin in minutes, or None."""

    @property
    def telemetry_fields(self) -> frozenset[str]:
        """The fields fed by telemetry."""


@dataclass(frozen=True)
class StackedBlock:
    """Node inputs over columns = bins [first_bin, first_bin + n); output bins start at column `out`."""

    first_bin: int
    out: int
    x: dict[str, FloatArray]  # field → (k × n), NaN where the node lacks the field
    denom: FloatArray  # capacity × parallelism
    gap: BoolArray
    cap_value: FloatArray  # capacity inference (NaN where not applicable or unknown)
    saturated: BoolArray
    applicable: BoolArray  # (k × 1)


@dataclass(frozen=True)
class StackedDerived:
    """`NodeDerived` of every node as (k × w) arrays over bins [t0, t0 + w); labels are index codes."""

    ids: tuple[str, ...]
    t0: int
    numeric: FloatArray  # (len(NUMERIC_FIELDS) × k × w), NaN = null, full precision
    method: NDArray[np.int8]  # index into _METHOD / _CONFIDENCE (0 = null)
    sla_met: BoolArray
    sla_evaluated: BoolArray
    color: NDArray[np.int8]  # index into COLORS
    reason: NDArray[np.int8]  # index into REASONS
    block: StackedBlock

    @property
    def n_bins(self) -> int:
        """Output bins (w)."""
        return int(self.numeric.shape[2])

    def field(self, attr: str) -> FloatArray:
        """One numeric field by `NodeDerived` attribute name, (k × w)."""
        out: FloatArray = self.numeric[_ATTR_INDEX[attr]]
        return out

    def labels(self, which: str) -> ObjArray:
        """(k × w) object array of capacity_method | capacity_confidence | color | color_reason."""
        table = {
            "capacity_method": (_METHOD, self.method),
            "capacity_confidence": (_CONFIDENCE, self.method),
            "color": (COLORS, self.color),
            "color_reason": (REASONS, self.reason),
        }[which]
        out: ObjArray = table[0][table[1]]
        return out


_ATTR_INDEX = {attr: i for i, (_, attr) in enumerate(NUMERIC_FIELDS)}


@dataclass(frozen=True, eq=False)
class StackLayout:
    """Where each node's inputs are in the run matrix, with its kind, parallelism and slaMin."""

    ids: tuple[str, ...]
    kind: NDArray[np.int8]  # (k,)
    rows: IntArray  # (fields × k) rows of V; 0 (any row) where absent
    present: BoolArray  # (fields × k)
    par_const: FloatArray  # (k,) the constant parallelism (1.0 when none)
    par_row: IntArray  # (k,) row of the parallelism series, -1 when constant
    sla: FloatArray  # (k,) NaN when none
    gap_idx: IntArray  # (k × m) telemetry indices of the node's fields; n_tele = never a gap
    conservation: BoolArray  # (k,) arrivals, served, queueDepth all present and telemetry-fed
    n_tele: int

    _present_flat: IntArray = field(init=False, repr=False)  # (field, node) pairs present, flat
    _present_rows: IntArray = field(init=False, repr=False)
    _par_series: IntArray = field(init=False, repr=False)  # nodes whose parallelism is a series

    def __post_init__(self) -> None:
        present_flat = np.flatnonzero(self.present.reshape(-1))
        object.__setattr__(self, "_present_flat", present_flat)
        object.__setattr__(self, "_present_rows", self.rows.reshape(-1)[present_flat])
        object.__setattr__(self, "_par_series", np.flatnonzero(self.par_row >= 0))

    @classmethod
    def from_plan(cls, plan: Any) -> StackLayout:
        """From a compiled `Plan` (its graph's topology, row map and telemetry rows)."""
        tele = [plan.names[int(row)] for row in plan.telemetry_rows]
        return cls.build(plan.graph.topo, plan.row, tele)

    @classmethod
    def build(cls, topo: Iterable[Binding], row: Mapping[str, int], telemetry_ids: Iterable[str]) -> StackLayout:
        """From topology bindings, the run matrix's row map and the telemetry series ids (in row order)."""
        nodes = list(topo)
        k = len(nodes)
        tele_index = {sid: i for i, sid in enumerate(telemetry_ids)}
        n_tele = len(tele_index)
        rows = np.zeros((len(STACK_FIELDS), k), dtype=np.intp)
        present = np.zeros((len(STACK_FIELDS), k), dtype=np.bool_)
        par_const, par_row = np.ones(k), np.full(k, -1, dtype=np.intp)
        sla, cons = np.full(k, np.nan), np.zeros(k, dtype=np.bool_)
        gaps: list[list[int]] = []
        for i, binding in enumerate(nodes):
            for field_index, name in enumerate(STACK_FIELDS):
                sid = binding.fields.get(name)
                if sid is not None and sid in row:
                    rows[field_index, i], present[field_index, i] = row[sid], True
            if isinstance(binding.parallelism, str):
                par_row[i] = row[binding.parallelism]
            elif isinstance(binding.parallelism, int | float):
                par_const[i] = float(binding.parallelism)
            if binding.sla_min is not None:
                sla[i] = float(binding.sla_min)
            fields = {"arrivals", "served", "queueDepth"}
            resolved = {name for name, sid in binding.fields.items() if sid in row}
            cons[i] = fields <= resolved and fields <= binding.telemetry_fields
            gaps.append(sorted({tele_index[sid] for sid in binding.fields.values() if sid in tele_index}))
        width = max((len(tele_rows) for tele_rows in gaps), default=0) or 1
        gap_idx = np.full((k, width), n_tele, dtype=np.intp)
        for i, tele_rows in enumerate(gaps):
            gap_idx[i, : len(tele_rows)] = tele_rows
        kind = np.array([KIND_CODES[binding.kind] for binding in nodes], dtype=np.int8)
        ids = tuple(binding.id for binding in nodes)
        return cls(ids, kind, rows, present, par_const, par_row, sla, gap_idx, cons, n_tele)

    def gather(
        self, V: FloatArray, base: int, t0: int, t1: int, gaps: GapFn | None = None, history: int = FLAG_HISTORY
    ) -> StackedBlock:
        """Inputs of bins [t0, t1) plus up to `history` bins before (never before column 0 = bin base);
        the capacity window reads 11 more bins of `served` before the block (again clipped at base)."""
        start = max(base, t0 - history)
        c0, c1 = start - base, t1 - base
        n, k = t1 - start, len(self.ids)
        flat = np.full((len(STACK_FIELDS) * k, n), np.nan)
        flat[self._present_flat] = V[self._present_rows, c0:c1]
        inputs = dict(zip(STACK_FIELDS, flat.reshape(len(STACK_FIELDS), k, n), strict=True))
        par = np.broadcast_to(self.par_const[:, None], (k, n))
        if self._par_series.size:
            par = par.copy()
            par[self._par_series] = V[self.par_row[self._par_series], c0:c1]
        gap = np.zeros((k, n), dtype=np.bool_)
        if gaps is not None and self.n_tele:
            tele_gap = gaps(start, t1)
            if tele_gap.any():
                padded_gap = np.zeros((self.n_tele + 1, n), dtype=np.bool_)  # last row: "no series"
                padded_gap[: self.n_tele] = tele_gap
                gap = np.any(padded_gap[self.gap_idx], axis=1)
        served = inputs["served"]
        applicable = (~self.present[STACK_FIELDS.index("capacity")] & self.present[1])[:, None]
        with np.errstate(all="ignore"):
            denom = inputs["capacity"] * par
            saturated = ((inputs["externalDemand"] > served) | (inputs["queueDepth"] > 0)) & applicable
            value = np.where(saturated, served, self._rolling_served(V, base, start, t1)) + 0.0  # ±0: as `derive`
        value[~(np.isfinite(value) & applicable)] = np.nan
        return StackedBlock(start, t0 - start, inputs, denom, gap, value, saturated, applicable)

    def _rolling_served(self, V: FloatArray, base: int, start: int, t1: int) -> FloatArray:
        """fmax of `served` over bins t-11..t for t in [start, t1), in the order `derive` reduces it."""
        n, lead = t1 - start, CAPACITY_WINDOW - 1
        first = max(base, start - lead)  # the first bin read (never before the matrix)
        padded = np.full((len(self.ids), lead + n), np.nan)
        rows = self.rows[1]
        padded[:, lead - (start - first) :] = V[rows, first - base : t1 - base]
        padded[~self.present[1]] = np.nan
        acc = padded[:, :n]
        for offset in range(1, CAPACITY_WINDOW):
            acc = np.fmax(acc, padded[:, offset : offset + n])
        return acc

    def derive_block(
        self,
        V: FloatArray,
        base: int,
        t0: int,
        t1: int,
        gaps: GapFn | None = None,
        bin_minutes: int = 1,
        history: int = FLAG_HISTORY,
    ) -> StackedDerived:
        """Every derived metric, colour and reason of every node for bins [t0, t1)."""
        return derive_stacked(self, self.gather(V, base, t0, t1, gaps, history), bin_minutes)


def derive_stacked(
    layout: StackLayout, blk: StackedBlock, bin_minutes: int, n_bins: int | None = None
) -> StackedDerived:
    """Derived values of the block's output columns (the first `n_bins` of them, default all)."""
    cols = slice(blk.out, None if n_bins is None else blk.out + n_bins)
    inputs = {name: values[:, cols] for name, values in blk.x.items()}
    arrivals, served, queue = inputs["arrivals"], inputs["served"], inputs["queueDepth"]
    denom, gap = blk.denom[:, cols], blk.gap[:, cols]
    k, w = served.shape
    bin_ms = float(bin_minutes) * 60000.0
    numeric = np.empty((len(NUMERIC_FIELDS), k, w))
    with np.errstate(all="ignore"):
        util = numeric[0] = _ratio(served, denom)
        per_served = _ratio(queue, served)
        queue_time = numeric[1] = per_served * bin_ms
        latency = numeric[2] = per_served * float(bin_minutes)
        service_time = numeric[3] = _ratio(inputs["processingTimeMsSum"], inputs["servedCount"])
        both_missing = np.isnan(queue_time) & np.isnan(service_time)
        cycle = np.where(
            both_missing, np.nan, np.nan_to_num(queue_time, nan=0.0) + np.nan_to_num(service_time, nan=0.0)
        )
        cycle[~np.isfinite(cycle)] = np.nan
        numeric[4] = cycle
        numeric[5] = _ratio(service_time, cycle)
        numeric[6] = np.clip(_ratio(served, arrivals), 0.0, 1.0)
        attempts = inputs["attempts"]
        numeric[7] = np.maximum(_ratio(attempts - served, attempts), 0.0)
        cap = numeric[8] = blk.cap_value[:, cols]
        method = np.where(np.isfinite(cap), np.where(blk.saturated[:, cols], 2, 1), 0).astype(np.int8)
        is_dlq = (layout.kind == KIND_CODES["dlq"])[:, None]
        sla_eval = np.isfinite(arrivals) & np.isfinite(served) & ~gap & ~is_dlq
        sla_met = sla_eval & ((arrivals == 0) | (_ratio(served, arrivals) >= SLA_RATIO))
        color, reason = _colors(layout, util, denom, latency, gap)
    return StackedDerived(layout.ids, blk.first_bin + blk.out, numeric, method, sla_met, sla_eval, color, reason, blk)


def _colors(
    layout: StackLayout, util: FloatArray, denom: FloatArray, latency: FloatArray, gap: BoolArray
) -> tuple[NDArray[np.int8], NDArray[np.int8]]:
    kind = layout.kind[:, None]
    is_dlq, is_queue = kind == KIND_CODES["dlq"], kind == KIND_CODES["queue"]
    has = np.isfinite(util)
    no_cap = ~np.isfinite(denom) | (denom == 0)
    svc_color = np.select([~has, util < 0.7, util < 0.9], [GRAY, GREEN, YELLOW], RED)
    svc_reason = np.select([has, no_cap], [R_UTIL, R_NOCAP], R_NOTHR)
    sla = layout.sla[:, None]
    no_sla = ~np.isfinite(sla)
    has_lat = np.isfinite(latency)
    q_color = np.select([no_sla, ~has_lat, latency <= sla, latency <= 1.5 * sla], [GRAY, GRAY, GREEN, YELLOW], RED)
    q_reason = np.select([no_sla, has_lat], [R_NOSLA, R_LAT], R_NOTHR)
    color = np.select([gap, is_dlq, is_queue], [GRAY, DLQ, q_color], svc_color).astype(np.int8)
    reason = np.select([gap, is_dlq, is_queue], [R_GAP, R_DLQ, q_reason], svc_reason).astype(np.int8)
    return color, reason


# ---- wire ---------------------------------------------------------------------------------------
def to_wire_bins(stacked: StackedDerived) -> list[list[dict[str, Any]]]:
    """Per output bin, the wire `derived{}` dict of every node (layout order); one rounding pass."""
    k, w = stacked.sla_met.shape
    nf = len(NUMERIC_FIELDS)
    rounded = round_wire(stacked.numeric)
    table: ObjArray = np.empty((w, k, len(WIRE_KEYS)), dtype=object)
    table[:, :, :nf] = rounded.transpose(2, 1, 0)
    table[:, :, :nf][np.isnan(rounded.transpose(2, 1, 0))] = None
    method = stacked.method.T
    table[:, :, nf] = _METHOD[method]
    table[:, :, nf + 1] = _CONFIDENCE[method]
    sla: ObjArray = stacked.sla_met.T.astype(object)
    sla[~stacked.sla_evaluated.T] = None
    table[:, :, nf + 2] = sla
    table[:, :, nf + 3] = COLORS[stacked.color.T]
    table[:, :, nf + 4] = REASONS[stacked.reason.T]
    # a dict display with constant keys builds twice as fast as dict(zip(WIRE_KEYS, row))
    return [
        [
            {
                "utilization": util,
                "queueTimeMs": qt,
                "latencyMinutes": lat,
                "serviceTimeMs": st,
                "cycleTimeMs": ct,
                "flowEfficiency": fe,
                "throughputRatio": tr,
                "retryTax": rt,
                "capacityInferred": ci,
                "capacityMethod": cm,
                "capacityConfidence": cc,
                "slaMet": sm,
                "color": co,
                "colorReason": cr,
            }
            for util, qt, lat, st, ct, fe, tr, rt, ci, cm, cc, sm, co, cr in rows
        ]
        for rows in table.tolist()
    ]


def to_wire_dicts(stacked: StackedDerived, j: int) -> list[dict[str, Any]]:
    """The wire `derived{}` dict of every node for output bin j (bin t0 + j)."""
    one = StackedDerived(
        stacked.ids,
        stacked.t0 + j,
        stacked.numeric[:, :, j : j + 1],
        stacked.method[:, j : j + 1],
        stacked.sla_met[:, j : j + 1],
        stacked.sla_evaluated[:, j : j + 1],
        stacked.color[:, j : j + 1],
        stacked.reason[:, j : j + 1],
        stacked.block,
    )
    return to_wire_bins(one)[0]
