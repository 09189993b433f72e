"""Writing one log record's cells into a live run's matrices (`LiveRun.apply_columns`).

Frame i is (bins[i], telemetry row idx[i] of P, matrix row rows[i] of V, column cols[i], values[i]).
A frame equal to the value held (same bits up to the sign of zero, and present) is a duplicate
and changes nothing; one for a bin at or below `last_bin` is a correction; the others are new
values (last wins for an unevaluated bin). `write_distinct` does it with vector operations when
no cell repeats within the record; `write_in_order` frame by frame, each compared with what the
frames before it left. Both give the same counts and bits (property-tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64] | NDArray[np.intp]


@dataclass(frozen=True)
class Written:
    """Counts of one record's cell writes, the bins it corrected and the lowest bin it wrote."""

    accepted: int
    duplicates: int
    corrected: int
    fixed: list[int]  # bins of the corrections (repeats possible)
    lowest: int | None  # the lowest bin written (None: nothing was)


def write_distinct(
    V: NDArray[np.float64],
    P: NDArray[np.bool_],
    cols: IntArray,
    idx: IntArray,
    rows: IntArray,
    bins: NDArray[np.int64],
    values: NDArray[np.float64],
    last_bin: int,
) -> Written:
    """Write the frames with vector operations; only valid when no cell repeats within the record."""
    cur = V[rows, cols]
    dup = P[idx, cols] & (cur == values) & (np.signbit(cur) == np.signbit(values))
    write = ~dup
    corrected = write & (bins <= last_bin)
    duplicates, n_corrected = int(dup.sum()), int(corrected.sum())
    lowest = None
    if duplicates < len(bins):
        V[rows[write], cols[write]] = values[write]
        P[idx[write], cols[write]] = True
        lowest = int(bins[write].min())
    fixed: list[int] = bins[corrected].tolist()
    return Written(len(bins) - duplicates - n_corrected, duplicates, n_corrected, fixed, lowest)


def write_in_order(
    V: NDArray[np.float64],
    P: NDArray[np.bool_],
    cols: IntArray,
    idx: IntArray,
    rows: IntArray,
    bins: NDArray[np.int64],
    values: NDArray[np.float64],
    last_bin: int,
) -> Written:
    """Write the frames one by one, each compared with what the frames before it left (cells may repeat)."""
    accepted = duplicates = corrected = 0
    fixed: list[int] = []
    lowest: int | None = None
    for b, c, j, r, v in zip(bins.tolist(), cols.tolist(), idx.tolist(), rows.tolist(), values.tolist(), strict=True):
        if P[j, c] and V[r, c] == v and math.copysign(1.0, V[r, c]) == math.copysign(1.0, v):
            duplicates += 1
            continue
        if b <= last_bin:
            corrected += 1
            fixed.append(b)
        else:
            accepted += 1
        lowest = b if lowest is None else min(lowest, b)
        V[r, c] = v
        P[j, c] = True
    return Written(accepted, duplicates, corrected, fixed, lowest)


__all__ = ["Written", "write_distinct", "write_in_order"]
