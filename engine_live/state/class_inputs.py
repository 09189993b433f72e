"""Class telemetry (SPEC §14): frames with `classId` for a telemetry-fed class source.

A source `S` fed by telemetry has one hidden telemetry row per class (`S@<c>:in`, written by
frames with `classId`) and a hidden `S@:mismatch` row. After every write the touched bins are
settled by `settle`, the one rule used live, in recovery and for bundles in batch:

- the total `S` is the total sent; when none was sent but classes were, it is their sum (classes
  not sent count 0), summed in class order;
- `S@:mismatch` is `S − Σ classes` where a total and classes were both sent and differ by more than
  1e-9 relative, else 0 (the run's warning `class_totals_mismatch` reads it);
- the class rows of `S` (computed by its class stage) are the classes sent, scaled to the total,
  or the model's shares when none were sent.

For closing bins and data gaps a source counts as present when its total or any class was sent;
the hidden rows themselves never hold a bin open and are never gaps (`presence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine_live.model.series_defs import ModelGraph

TOLERANCE = 1e-9
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]


def settle_columns(
    total: FloatArray, sent: BoolArray, parts: FloatArray, given: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """(total, mismatch) of sources: `total`, `sent` (m, w); `parts` (m, K, w) the class values (0 where
    not given), `given` (m, w) whether any class was sent."""
    acc = parts[:, 0]
    for k in range(1, parts.shape[1]):
        acc = acc + parts[:, k]
    derived = given & ~sent
    new_total = np.where(derived, acc, total)
    diff = total - acc
    scale = np.maximum(np.abs(total), np.abs(acc))
    off = sent & given & (np.abs(diff) > TOLERANCE * scale)
    return new_total, np.where(off, diff, 0.0)


@dataclass(frozen=True)
class ClassInputIndex:
    """Where a run's class telemetry lives: telemetry indices (rows of P) and matrix rows (of V)."""

    source_idx: IntArray  # (m,)
    source_rows: IntArray
    input_idx: IntArray  # (m, K)
    input_rows: IntArray
    mismatch_rows: IntArray  # (m,)
    hidden_idx: IntArray  # every hidden telemetry index

    @classmethod
    def of(cls, graph: ModelGraph, row: dict[str, int], telemetry_ids: tuple[str, ...]) -> ClassInputIndex | None:
        """The index of a plan's class inputs; None for a run without any."""
        if not graph.class_inputs:
            return None
        tele = {sid: i for i, sid in enumerate(telemetry_ids)}
        ins = graph.class_inputs

        def ints(values: list[int] | list[list[int]]) -> IntArray:
            return np.asarray(values, dtype=np.intp)

        return cls(
            source_idx=ints([tele[one.source] for one in ins]),
            source_rows=ints([row[one.source] for one in ins]),
            input_idx=ints([[tele[sid] for sid in one.inputs] for one in ins]),
            input_rows=ints([[row[sid] for sid in one.inputs] for one in ins]),
            mismatch_rows=ints([row[one.mismatch] for one in ins]),
            hidden_idx=ints(sorted(tele[sid] for one in ins for sid in one.rows)),
        )

    def presence(self, present: BoolArray) -> BoolArray:
        """Rows of P (telemetry × bins) as the closing rule and the gaps see them: a source is present
        where its total or any class was sent; hidden rows always count as present."""
        out = present.copy()
        out[self.source_idx] |= present[self.input_idx].any(axis=1)
        out[self.hidden_idx] = True
        return out

    def settle(self, V: FloatArray, P: BoolArray, c0: int, c1: int) -> None:
        """Apply the rule above to columns [c0, c1) of a run's matrices, in place."""
        total = V[self.source_rows, c0:c1]
        sent = P[self.source_idx, c0:c1]
        parts = V[self.input_rows, c0:c1]
        given: BoolArray = np.any(P[self.input_idx, c0:c1], axis=1)
        V[self.source_rows, c0:c1], V[self.mismatch_rows, c0:c1] = settle_columns(total, sent, parts, given)


def settle_batch(graph: ModelGraph, telemetry: dict[str, FloatArray], present: dict[str, BoolArray], n: int) -> None:
    """The same rule over whole series of a batch run (bundles): `telemetry` (series id → values, 0
    where not given) gains the derived totals and the mismatch rows; `present` says which bins were given."""
    none = np.zeros(n, dtype=bool)
    zeros = np.zeros(n)
    for one in graph.class_inputs:
        if not any(sid in telemetry for sid in one.inputs):
            continue
        total = telemetry.get(one.source, zeros)[None, :]
        sent = present.get(one.source, none)[None, :]
        parts = np.stack([telemetry.get(sid, zeros) for sid in one.inputs])[None, :, :]
        given = np.asarray(np.stack([present.get(sid, none) for sid in one.inputs]).any(axis=0), dtype=bool)[None, :]
        new_total, mismatch = settle_columns(total, sent, parts, given)
        telemetry[one.source], telemetry[one.mismatch] = new_total[0], mismatch[0]
