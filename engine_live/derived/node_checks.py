"""Per-node, per-bin warning flags (SPEC §3, §12.6), vectorized over bins.

`node_flags` returns, for every code below, `(mask, value)` over the node's output bins (inputs
minus `lookback`). Every code is always present — an inapplicable check gives an all-false mask —
so feeding all of them to `WarningBook.set_flags` also clears flags a correction made obsolete.
`record_node_flags` does exactly that with the severity, worst-value rule and message of `CHECKS`.

Code — severity — flagged when — value (worst of the key):
- arrivals_negative / served_negative / queue_negative — warning — series < -1e-9 — the series (min)
- served_exceeds_arrivals — warning — served > arrivals + 1e-6, not for serviceWithBuffer, queue
  and dlq (a queue legitimately drains backlog) — served − arrivals (max)
- served_exceeds_capacity — warning — served > capacity × parallelism + 1e-6 (capacity series
  only, never the inferred one) — the excess (max)
- conservation_violation — warning — arrivals, served and queueDepth all in telemetry_fields and
  |arrivals − served − ΔqueueDepth| > 0.01 — the signed residual (absmax)
- backlog_growth_streak — warning — queueDepth rose in this bin and the 2 before (the 3rd, 4th, …
  bin of a streak are flagged) — queueDepth (max)
- capacity_inferred_low — info — capacity inferred with low confidence in this bin and the 2
  before — null
- data_gap — warning — node inputs zero-filled (`node.gap`) — null

Decisions: negatives use -1e-9 (a value the wire shows as 0 does not warn). Errors are not part of
the conservation residual (the spec's formula). A data-gap bin holds placeholders, so it is never
flagged by another check, and it breaks streaks and the queue delta of the next bin. A bin whose
previous queue depth is unknown (the first input bin) is not checked for conservation or growth:
pass `lookback >= 3` (derived.REQUIRED_LOOKBACK is enough) for results independent of slicing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine_live.derived.node_metrics import BoolArray, FloatArray, NodeDerived, NodeInputs, capacity_inference
from engine_live.warnings.book import Aggregate, MessageFn, WarningBook, Worst

Flags = dict[str, tuple[BoolArray, FloatArray]]
NEGATIVE_TOLERANCE = 1e-9
EXCESS_TOLERANCE = 1e-6
CONSERVATION_TOLERANCE = 0.01
STREAK_BINS = 3
QUEUE_KINDS = frozenset({"serviceWithBuffer", "queue", "dlq"})


def _msg(text: str, value_label: str | None = None) -> MessageFn:
    def build(agg: Aggregate) -> str:
        bins = ", ".join(str(bin_index) for bin_index in agg.bins) + (", …" if agg.count > len(agg.bins) else "")
        tail = f"; {value_label} {agg.value:g}" if value_label and agg.value is not None else ""
        return f"{agg.node_id}: {text} in {agg.count} bin(s) ({bins}){tail}"

    return build


@dataclass(frozen=True)
class CheckSpec:
    """A check code's severity, worst-value rule and message function."""

    severity: str
    worst: Worst
    message: MessageFn


CHECKS: dict[str, CheckSpec] = {
    "arrivals_negative": CheckSpec("warning", "min", _msg("arrivals negative", "lowest")),
    "served_negative": CheckSpec("warning", "min", _msg("served negative", "lowest")),
    "queue_negative": CheckSpec("warning", "min", _msg("queue depth negative", "lowest")),
    "served_exceeds_arrivals": CheckSpec("warning", "max", _msg("served exceeds arrivals", "largest excess")),
    "served_exceeds_capacity": CheckSpec(
        "warning", "max", _msg("served exceeds capacity × parallelism", "largest excess")
    ),
    "conservation_violation": CheckSpec(
        "warning", "absmax", _msg("arrivals − served − Δqueue exceeds 0.01", "largest residual")
    ),
    "backlog_growth_streak": CheckSpec("warning", "max", _msg("queue grew 3 or more bins in a row", "highest queue")),
    "capacity_inferred_low": CheckSpec("info", "max", _msg("capacity inferred with low confidence")),
    "data_gap": CheckSpec("warning", "max", _msg("data gap: inputs zero-filled")),
}


def _streak(flags: BoolArray) -> BoolArray:
    """True where `flags` has been true for this bin and the STREAK_BINS - 1 before."""
    idx = np.arange(len(flags))
    last_false = np.maximum.accumulate(np.where(flags, -1, idx))
    result: BoolArray = (idx - last_false) >= STREAK_BINS
    return result


def _previous(series: FloatArray) -> FloatArray:
    return np.concatenate([[np.nan], series[:-1]]) if len(series) else series


def node_flags(node: NodeInputs, derived: NodeDerived, telemetry_fields: frozenset[str]) -> Flags:
    """Mask and value per bin of every check code, over the node's output bins."""
    n, lb = node.length, node.lookback
    if derived.n_bins != n - lb:
        raise ValueError(f"node {node.node_id!r}: derived has {derived.n_bins} bins, inputs {n - lb}")
    nothing = np.zeros(n, dtype=np.bool_)
    no_value = np.full(n, np.nan)
    full: dict[str, tuple[BoolArray, FloatArray]] = {code: (nothing, no_value) for code in CHECKS}
    gap = node.gap_series()
    arrivals, served, queue = node.series("arrivals"), node.series("served"), node.series("queueDepth")
    capacity = node.series("capacity")
    with np.errstate(all="ignore"):
        for code, series in (("arrivals_negative", arrivals), ("served_negative", served), ("queue_negative", queue)):
            if series is not None:
                full[code] = (series < -NEGATIVE_TOLERANCE, series)
        if served is not None and arrivals is not None and node.kind not in QUEUE_KINDS:
            excess = served - arrivals
            full["served_exceeds_arrivals"] = (excess > EXCESS_TOLERANCE, excess)
        if served is not None and capacity is not None:
            excess = served - capacity * node.parallelism_series()
            full["served_exceeds_capacity"] = (excess > EXCESS_TOLERANCE, excess)
        if queue is not None:
            prev_q = _previous(queue)
            prev_gap = np.concatenate([[True], gap[:-1]]) if n else gap
            known = ~prev_gap & np.isfinite(prev_q)
            if arrivals is not None and served is not None and {"arrivals", "served", "queueDepth"} <= telemetry_fields:
                residual = arrivals - served - (queue - prev_q)
                full["conservation_violation"] = (known & (np.abs(residual) > CONSERVATION_TOLERANCE), residual)
            grew = known & ~gap & (queue > prev_q)
            full["backlog_growth_streak"] = (_streak(grew), queue)
        cap_value, saturated, applicable = capacity_inference(node)
        low = applicable & ~saturated & np.isfinite(cap_value) & ~gap
        full["capacity_inferred_low"] = (_streak(low), no_value)
    full["data_gap"] = (gap, no_value)
    out: Flags = {}
    for code, (mask, value) in full.items():
        if code not in ("data_gap", "capacity_inferred_low"):
            mask = mask & ~gap
        out[code] = (np.ascontiguousarray(mask[lb:]), np.ascontiguousarray(value[lb:], dtype=np.float64))
    return out


def record_node_flags(
    book: WarningBook,
    node_id: str,
    first_bin: int,
    flags: Mapping[str, tuple[BoolArray, FloatArray]],
    series_id: str | None = None,
) -> None:
    """Feed `node_flags` output for output bins starting at run bin `first_bin` into the book."""
    for code, (mask, values) in flags.items():
        spec = CHECKS[code]
        bins = np.arange(first_bin, first_bin + len(mask), dtype=np.int64)
        book.set_flags(
            (code, node_id, series_id),
            bins,
            mask,
            values,
            severity=spec.severity,
            message_fn=spec.message,
            worst=spec.worst,
        )
