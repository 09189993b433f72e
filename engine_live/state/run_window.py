"""The matrix window of a live run: which bins are held in memory, how it slides, and what it lets go.

`V` holds every series (rows = plan.names, column c = bin `base + c`) and `P` the presence of each
telemetry series (same columns). The window keeps every bin still correctable — the last
`retention_bins` evaluated bins — plus `plan.lookback` bins of history before them, sliding forward
(and growing when a record reaches far ahead). With persistence tracked (`persisted_before` not
None) a bin leaves only once a committed segment holds it (see `engine_live.state.live_run`).
`dirty_from` / `capture_owner` serve incremental snapshot capture (`live_state.CaptureMirror`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from engine_live.errors import OutsideRetentionError
from engine_live.plan.compiler import ZERO, Plan
from engine_live.state.class_inputs import ClassInputIndex

OPEN_ENDED_RETENTION = 8640
FloatArray = NDArray[np.float64]


class RunWindow:
    """The held columns of a run's series, with retention and persistence bookkeeping."""

    MIN_SLACK = 32  # columns beyond the kept ones, so a slide (a copy) happens at most every slack bins
    INITIAL_COLUMNS = 256  # grown by doubling up to keep + slack

    def __init__(self, plan: Plan, retention_bins: int | None, persisted_before: int | None) -> None:
        self.plan, self.grid = plan, plan.graph.grid
        self.retention_bins = retention_bins or self.grid.bins or OPEN_ENDED_RETENTION
        self.persisted_before = persisted_before  # bins below are in committed segments (None: not tracked)
        self.last_bin = -1
        self.telemetry_ids: tuple[str, ...] = tuple(plan.names[int(r)] for r in plan.telemetry_rows)
        self._tele_rows = [int(r) for r in plan.telemetry_rows]
        self.class_inputs = ClassInputIndex.of(plan.graph, plan.row, self.telemetry_ids)
        self._keep = self.retention_bins + plan.lookback
        self._slack = max(self.MIN_SLACK, self._keep // 8)
        cols = min(self._keep + self._slack, self.INITIAL_COLUMNS)
        self.base = 0
        self.V: FloatArray = np.zeros((plan.n_rows, cols))
        self.P: NDArray[np.bool_] = np.zeros((len(self._tele_rows), cols), dtype=bool)
        # Incremental capture (`live_state.CaptureMirror`): the lowest bin written since the owner's
        # last capture; every write to V/P lowers it. A different (or no) owner means "copy all".
        self.dirty_from = 0
        self.capture_owner: object | None = None

    @property
    def lowest_correctable(self) -> int:
        """The lowest bin a correction may still reach (the last `retention_bins` evaluated bins are correctable)."""
        return max(0, self.last_bin - self.retention_bins + 1)

    # -- persistence ----------------------------------------------------------------------------
    @property
    def immutable_before(self) -> int:
        """Evaluated bins below this can never change again nor be read by an evaluation."""
        return max(0, self.lowest_correctable - self.plan.lookback)

    def unpersisted_range(self) -> tuple[int, int]:
        """[from, to): the immutable evaluated bins not yet in a committed segment (empty when from ≥ to)."""
        return self.persisted_before or 0, self.immutable_before

    def mark_persisted(self, before: int) -> None:
        """A committed snapshot holds every bin below `before` in segments: those columns may go."""
        self.persisted_before = max(self.persisted_before or 0, before)

    def held_columns(self) -> tuple[int, FloatArray, NDArray[np.bool_]]:
        """(first bin, V, P): copies of the evaluated columns still in memory, bins first..last_bin."""
        n = self.last_bin + 1 - self.base
        return self.base, self.V[:, :n].copy(), self.P[:, :n].copy()

    def _touch(self, bin_index: int) -> None:
        """Bins ≥ bin_index of V/P were (or may have been) written since the last incremental capture."""
        if bin_index < self.dirty_from:
            self.dirty_from = bin_index

    def invalidate_capture(self) -> None:
        """The next incremental capture copies everything (rows changed, or a capture was lost)."""
        self.capture_owner = None

    def _ensure_columns(self, hi: int) -> None:
        """Make bin `hi` addressable, sliding out bins no evaluation or correction can read and
        (when persistence is tracked) that a committed segment holds; growing otherwise."""
        cols = self.V.shape[1]
        if hi < self.base + cols:
            return
        lo = self.immutable_before
        if self.persisted_before is not None:
            lo = min(lo, self.persisted_before)
        lo = max(self.base, lo)
        need = hi - lo + 1
        grow = need if need <= self._keep + self._slack else need + self._slack  # amortise a blocked slide
        new_cols = cols if need <= cols else max(grow, min(self._keep + self._slack, 2 * cols))
        V = np.zeros((self.V.shape[0], new_cols))
        P = np.zeros((self.P.shape[0], new_cols), dtype=bool)
        keep = self.base + cols - lo
        V[:, :keep] = self.V[:, lo - self.base :]
        P[:, :keep] = self.P[:, lo - self.base :]
        self.V, self.P, self.base = V, P, lo

    # -- reads ----------------------------------------------------------------------------------
    def retained_range(self) -> tuple[int, int]:
        """[lo, hi) of evaluated bins still in memory and readable."""
        return max(self.base, self.lowest_correctable), self.last_bin + 1

    def _col(self, bin_index: int) -> int:
        lo, hi = self.retained_range()
        if not lo <= bin_index < hi:
            raise OutsideRetentionError(f"bin {bin_index} is not retained (retained: {lo}..{hi - 1})", bin=bin_index)
        return bin_index - self.base

    def state_at(self, bin_index: int) -> FloatArray:
        """Every series (plan.names order) at an evaluated, retained bin."""
        return self.V[:, self._col(bin_index)].copy()

    def series(self, series_id: str) -> FloatArray:
        """The retained evaluated values of one series (bins retained_range())."""
        lo, hi = self.retained_range()
        return self.V[self.plan.row[series_id], lo - self.base : hi - self.base].copy()

    def presence(self, t0: int, t1: int) -> NDArray[np.bool_]:
        """(telemetry series × bins) True where a series has a value (class telemetry: its total or a
        class sent; `engine_live.state.class_inputs`)."""
        present = self.P[:, t0 - self.base : t1 - self.base]
        return present if self.class_inputs is None else self.class_inputs.presence(present)

    def gaps(self, t0: int, t1: int) -> NDArray[np.bool_]:
        """(telemetry series × bins) True where an evaluated bin was zero-filled."""
        return ~self.presence(t0, t1)

    def node_gaps(self, t0: int, t1: int) -> dict[str, NDArray[np.bool_]]:
        """Per topology node, the bins of [t0, t1) where any of its telemetry inputs was zero-filled."""
        return node_gap_masks(self.plan, self.telemetry_ids, self.gaps(t0, t1))

    def final_series(self) -> dict[str, FloatArray]:
        """Every series over bins 0..last_bin; requires the whole evaluated range to be retained."""
        lo, hi = self.retained_range()
        if lo != 0:
            raise OutsideRetentionError(f"bins before {lo} have left memory", bin=0)
        V = self.V[:, -self.base : hi - self.base]
        return {name: V[i].copy() for i, name in enumerate(self.plan.names) if name != ZERO}


def node_gap_masks(
    plan: Plan, telemetry_ids: Sequence[str], missing: NDArray[np.bool_]
) -> dict[str, NDArray[np.bool_]]:
    """Per topology node, OR of the `missing` rows (telemetry series × bins) of its telemetry inputs."""
    tele = {sid: missing[i] for i, sid in enumerate(telemetry_ids)}
    out: dict[str, NDArray[np.bool_]] = {}
    for b in plan.graph.topo:
        masks = [tele[sid] for sid in b.fields.values() if sid in tele]
        if masks:
            out[b.id] = np.logical_or.reduce(masks)
    return out
