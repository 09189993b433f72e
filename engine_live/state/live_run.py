"""One live run: inputs in, evaluated bins and seq'd events out (SPEC §6, §7). Pure and synchronous.

State: the matrix `V` (rows = plan.names, column c = bin `base + c`) and a presence matrix `P`
(telemetry series × the same columns). A telemetry cell that is not present holds 0, so an
evaluated bin with a missing input is a zero-filled placeholder (a data gap). The columns slide
forward (and grow when a record reaches far ahead) keeping every bin still correctable — the last
`retention_bins` evaluated bins — plus `plan.lookback` bins of history before them.

Persistence (SPEC §6 Retention): a run that is snapshotted (`persisted_before` not None; the live
service sets 0) lets a bin leave the matrix only once a committed snapshot holds it in an immutable
segment: columns below min(lowest_correctable − lookback, persisted_before) may be dropped, the
matrix grows otherwise (bounded by retention + lookback + the bins between two snapshot commits).
`immutable_before` is where no correction (they reach back to lowest_correctable) and no
evaluation (it reads `plan.lookback` bins before that) can touch a bin any more:
`unpersisted_range()` = [persisted_before, immutable_before) is what the next snapshot must write as
a segment, `mark_persisted(b)` (after its commit) lets those columns go. With `persisted_before`
None (a run nothing persists: the pure engine in tests and benches) the window slides as before.

`apply` takes one ingestion-log record's values (a `FrameBatch`) and returns the events it
causes, seq +1 each: first the republished bins of a correction (one `evaluate_range` over
t..lastBin, only bins whose bits or gap state changed, `revision` raised once per record), then
every bin the record lets close, in ascending order. Bin t closes when all telemetry series have
a value for it, or when watermark ≥ t + grace_bins. Counts (values, not frames): `accepted` new
values (including last-wins overwrites of an unevaluated bin), `duplicates` (bit-equal to the
value held), `corrected` (a new value for an evaluated bin, placeholders included).

Hooks (`BinHooks`) are the seams for derived metrics, warnings and wire rounding; the defaults
add nothing. Decisions: `close()` sends `status: closing` before the bins it evaluates;
`complete()` sends `status: completed`; a run without telemetry series closes its bins only at close.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from engine_live.errors import IngestError, OutsideRetentionError, RunClosedError
from engine_live.plan.compiler import Plan
from engine_live.plan.evaluator import evaluate_range
from engine_live.protocol import (
    Event,
    EventType,
    RunStatus,
    envelope,
    progress_event,
    status_event,
    warning_event,
)
from engine_live.state.cell_writes import write_distinct, write_in_order
from engine_live.state.class_inputs import ClassInputIndex
from engine_live.state.delta_layout import DeltaLayout
from engine_live.state.frame_batch import FrameBatch
from engine_live.state.run_window import FloatArray, RunWindow

DEFAULT_GRACE_BINS = 2


@dataclass
class ApplyResult:
    """What one applied log record gave: value counts (accepted, duplicates, corrected) and its events."""

    accepted: int = 0
    duplicates: int = 0
    corrected: int = 0
    events: list[Event] = field(default_factory=list)


class BinHooks:
    """Extension points; subclass and pass to LiveRun. Called only for bins being published."""

    dependent_bins = 0  # how many later bins a bin's derived values depend on (republished after a correction)

    def wire(self, block: FloatArray) -> FloatArray:
        """Wire rounding of a (values × bins) block; NaN stays NaN (encoded as null)."""
        return block

    def derived(self, run: LiveRun, t0: int, t1: int) -> list[dict[str, dict[str, Any]]]:
        """Per bin of [t0, t1): nodeId → derived metrics (with color)."""
        return [{} for _ in range(t1 - t0)]

    def quiet_changes(self, run: LiveRun, t0: int, t1: int) -> int:
        """A quiet publish of bins [t0, t1): how many warning changes `warnings` would give, with the
        hooks' state advanced exactly as by those calls (no `derived`: nothing is built)."""
        return sum(len(self.warnings(run, t)) for t in range(t0, t1))

    def warnings(self, run: LiveRun, bin_index: int) -> list[tuple[Literal["add", "clear"], dict[str, Any]]]:
        """(op, warning) changes caused by (re)evaluating this bin, sorted by (code, nodeId)."""
        return []


class LiveRun(RunWindow):
    """One live run (see the module docstring); its matrix window is `RunWindow`'s."""

    def __init__(
        self,
        plan: Plan,
        *,
        run_id: str,
        epoch: str,
        grace_bins: int = DEFAULT_GRACE_BINS,
        retention_bins: int | None = None,
        hooks: BinHooks | None = None,
        persisted_before: int | None = None,
    ) -> None:
        super().__init__(plan, retention_bins, persisted_before)
        self.run_id, self.epoch = run_id, epoch
        self.grace_bins = grace_bins
        self.hooks = hooks or BinHooks()
        self.status = RunStatus.CREATED
        self.seq = self.revision = self.model_revision = 0
        self.watermark = self.last_bin = -1
        self._tele_index = {sid: i for i, sid in enumerate(self.telemetry_ids)}
        self._tele_rows_a = np.asarray(self._tele_rows, dtype=np.intp)
        # the last series sequence, its index and whether that index has no repeats
        self._series_cache: tuple[tuple[str, ...], NDArray[np.intp], bool] | None = None
        self._start = self.grid.start_dt()
        self._layout = DeltaLayout.of(self.plan)
        # Quiet (recovery of a long log tail): bins are evaluated and seq numbers and hooks advance
        # exactly as when publishing, but no event is built (the events returned are only statuses).
        # Bins a quiet record lets close wait in `_pending` and are evaluated together, as one range,
        # before anything could tell the difference (`flush`).
        self._quiet = False
        self._pending = -1

    # -- quiet replay ---------------------------------------------------------------------------
    @property
    def quiet(self) -> bool:
        """True while replaying quietly: bins are evaluated and seq and hooks advance, but no event is built."""
        return self._quiet

    @quiet.setter
    def quiet(self, on: bool) -> None:
        """Turn quiet replay on or off; turning it off first evaluates the bins still pending (`flush`)."""
        if not on:
            self.flush()
        self._quiet = on

    MAX_PENDING = 256  # quiet: evaluate at least every this many bins (bounds the matrix growth)

    def flush(self) -> None:
        """Evaluate the bins quiet records let close and that wait in `_pending` (quiet: no events).

        Exact: one `evaluate_range` over several bins equals evaluating them one by one, and the
        hooks see every bin in order. A record that reaches a pending bin or below flushes first,
        so what is a correction (and so a revision and republished bins) stays one."""
        if self._pending > self.last_bin:
            end, self._pending = self._pending, -1
            self._evaluate_through(end, [])

    # -- lifecycle ------------------------------------------------------------------------------
    def set_status(self, new: RunStatus, reason: str | None = None, *, seqd: bool = True) -> Event:
        """Checked transition; the status event consumes a seq only when a log record caused it."""
        self.status = self.status.to(new)
        if seqd:
            self.seq += 1
        return status_event(self.run_id, self.epoch, self.seq, self.status, reason)

    def start(self) -> list[Event]:
        """The create record: created → live."""
        return [self.set_status(RunStatus.LIVE)]

    def close(self) -> list[Event]:
        """The close record: evaluate through bins-1 (or the watermark when open-ended), zero-filling."""
        if not self.status.is_open:
            return []  # a repeated close is a no-op
        self.flush()
        events = [self.set_status(RunStatus.CLOSING)]
        end = self.grid.bins - 1 if self.grid.bins is not None else self.watermark
        self._evaluate_through(end, events)
        return events

    def complete(self) -> list[Event]:
        """After the final artifacts are committed: closing → completed."""
        return [self.set_status(RunStatus.COMPLETED)]

    def progress(self) -> Event:
        """A `progress` event with the watermark and lagBins at the current seq (it consumes no seq)."""
        return progress_event(self.run_id, self.epoch, self.seq, self.watermark, self.last_bin)

    # -- ingestion ------------------------------------------------------------------------------
    def apply(self, batch: FrameBatch) -> ApplyResult:
        """Apply one log record's values (all-or-nothing checks first), then publish what changed."""
        if not self.status.is_open:
            raise RunClosedError(f"run '{self.run_id}' is {self.status.value}", runId=self.run_id)
        if len(batch) == 0:
            return ApplyResult()
        return self.apply_columns(batch.bins, self.series_index(batch.series), batch.values)

    def series_index(self, series: Sequence[str]) -> NDArray[np.intp]:
        """Telemetry index (rows of P) of each series id; IngestError naming the first unknown one.
        Producers send the same series in the same order bin after bin: the last answer is reused
        when the sequence is equal (one string comparison per frame instead of a dict lookup)."""
        key = tuple(series)
        cached = self._series_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        get = self._tele_index.get
        found = [get(s) for s in key]
        if None in found:
            i = found.index(None)
            raise IngestError(
                f"frame {i}: series '{series[i]}' is not telemetry-fed", code="not_telemetry", frame=i, field="series"
            )
        idx = np.asarray(found, dtype=np.intp)
        idx.flags.writeable = False
        self._series_cache = (key, idx, np.unique(idx).size == idx.size)
        return idx

    def apply_columns(self, bins: NDArray[np.int64], idx: NDArray[np.intp], values: NDArray[np.float64]) -> ApplyResult:
        """`apply` on resolved columns: frame i is (bins[i], telemetry series idx[i], values[i]), finite.

        Frames apply in order (last wins). When no cell repeats within the record (the usual case)
        the duplicate/accepted/corrected split and the writes are one vector operation each;
        otherwise frames are applied one by one, each compared with what the frames before it left.
        """
        if not self.status.is_open:
            raise RunClosedError(f"run '{self.run_id}' is {self.status.value}", runId=self.run_id)
        n = len(bins)
        if n == 0:
            return ApplyResult()
        low = int(bins.min())
        if self._pending > self.last_bin and low <= self._pending:
            self.flush()  # the record reaches a bin that closed: apply it as after that bin's evaluation
        limit = self.grid.bins if self.grid.bins is not None else np.iinfo(np.int64).max
        bad = np.flatnonzero((bins < 0) | (bins >= limit))
        if bad.size:
            i = int(bad[0])
            raise IngestError(f"frame {i}: bin {int(bins[i])} is outside the grid", frame=i, field="bin")
        old = np.flatnonzero(bins < self.lowest_correctable)
        if old.size:
            i = int(old[0])
            raise OutsideRetentionError(
                f"frame {i}: bin {int(bins[i])} is older than the retention window "
                f"(lowest correctable bin {self.lowest_correctable})",
                frame=i,
                field="bin",
                lowestBin=self.lowest_correctable,
            )
        top = int(bins.max())
        self._ensure_columns(top)
        res = ApplyResult()
        cols = bins - self.base
        rows = self._tele_rows_a[idx]
        width = self.V.shape[1]
        known = self._series_cache
        distinct_in_one_bin = low == top and known is not None and known[1] is idx and known[2]
        if distinct_in_one_bin or np.unique(idx * width + cols).size == n:
            w = write_distinct(self.V, self.P, cols, idx, rows, bins, values, self.last_bin)
        else:
            w = write_in_order(self.V, self.P, cols, idx, rows, bins, values, self.last_bin)
        if self.class_inputs is not None and w.lowest is not None:
            self.class_inputs.settle(self.V, self.P, w.lowest - self.base, top + 1 - self.base)
        res.accepted, res.duplicates, res.corrected = w.accepted, w.duplicates, w.corrected
        fixed = w.fixed
        if w.lowest is not None:
            self._touch(w.lowest)
        self.watermark = max(self.watermark, top)
        if fixed:
            self.revision += 1
            self._recompute(fixed, res.events)
        self._close_ready(res.events)
        return res

    def _recompute(self, fixed: list[int], events: list[Event]) -> None:
        t0, t1 = min(fixed), self.last_bin + 1
        c0, c1 = t0 - self.base, t1 - self.base
        before = self.V[:, c0:c1].copy()
        self._touch(t0)
        evaluate_range(self.plan, self.V, self.base, t0, t1)
        changed = (before.view(np.uint64) != self.V[:, c0:c1].view(np.uint64)).any(axis=0)
        changed[np.asarray(fixed) - t0] = True  # an input changed or a gap was filled
        span = self.hooks.dependent_bins  # derived values read back this many bins: republish them too
        for f in fixed:
            changed[f - t0 : f - t0 + span + 1] = True
        for k in np.flatnonzero(changed).tolist():
            self._publish(t0 + k, t0 + k + 1, events, self.last_bin)

    def replace_plan(self, plan: Plan, from_bin: int, hooks: BinHooks | None = None) -> list[Event]:
        """A logged model adjustment (§12.8): switch to `plan` (same telemetry series) from `from_bin`
        (≤ lastBin + 1); rows are carried over by series id, new series start at 0, and bins
        from_bin..lastBin are recomputed like a correction (revision +1 when any)."""
        if not self.status.is_open:
            raise RunClosedError(f"run '{self.run_id}' is {self.status.value}", runId=self.run_id)
        self.flush()
        old_plan, old_index = self.plan, self._tele_index
        V = np.zeros((plan.n_rows, self.V.shape[1]))
        for name, r in plan.row.items():
            o = old_plan.row.get(name)
            if o is not None:
                V[r] = self.V[o]
        self.plan, self.V = plan, V
        self.invalidate_capture()  # rows changed: the next incremental capture is a full copy
        self._touch(self.base)
        self.telemetry_ids = tuple(plan.names[int(r)] for r in plan.telemetry_rows)
        self._tele_index = {sid: i for i, sid in enumerate(self.telemetry_ids)}
        self._tele_rows = [int(r) for r in plan.telemetry_rows]
        self._tele_rows_a = np.asarray(self._tele_rows, dtype=np.intp)
        self._series_cache = None
        self.P = self.P[[old_index[sid] for sid in self.telemetry_ids]]
        self.class_inputs = ClassInputIndex.of(plan.graph, plan.row, self.telemetry_ids)
        self._keep = self.retention_bins + plan.lookback
        self._layout = DeltaLayout.of(self.plan)
        if hooks is not None:
            self.hooks = hooks
        self.model_revision += 1
        events: list[Event] = []
        if from_bin <= self.last_bin:
            self.revision += 1
            self._recompute([from_bin], events)
        return events

    def _close_ready(self, events: list[Event]) -> None:
        t, w = max(self.last_bin, self._pending) + 1, self.watermark
        if t > w:
            return
        ready: NDArray[np.bool_] = np.all(self.presence(t, w + 1), axis=0)
        ready[: max(0, w - self.grace_bins - t + 1)] = True
        k = len(ready) if ready.all() else int(ready.argmin())
        if k and self._quiet:
            self._pending = t + k - 1
            if self._pending - self.last_bin >= self.MAX_PENDING:
                self.flush()
        elif k:
            self._evaluate_through(t + k - 1, events)

    def _evaluate_through(self, end: int, events: list[Event]) -> None:
        """Evaluate the new bins last_bin+1..end in chunks that fit the matrix, publishing each."""
        while self.last_bin < end:
            t0 = self.last_bin + 1
            t1 = min(end, self.last_bin + self._slack) + 1
            self._ensure_columns(t1 - 1)
            self._touch(t0)
            evaluate_range(self.plan, self.V, self.base, t0, t1)
            self.last_bin = t1 - 1
            self._publish(t0, t1, events, t0 - 1)

    # -- columns --------------------------------------------------------------------------------
    # -- events ---------------------------------------------------------------------------------
    def _publish(self, t0: int, t1: int, events: list[Event], prev_last: int) -> None:
        """One run_update per bin of [t0, t1), each followed by its warning updates. An update's
        `lastBin` is max(its bin, prev_last): how far evaluation had got when it was published."""
        if self._quiet:
            self.seq += (t1 - t0) + self.hooks.quiet_changes(self, t0, t1)
            return
        layout = self._layout
        block = self.hooks.wire(self.V[layout.gather, t0 - self.base : t1 - self.base])
        columns = block.T.tolist()
        derived = self.hooks.derived(self, t0, t1)
        status, bm = self.status.value, self.grid.bin_minutes
        for k, values in enumerate(columns):
            t = t0 + k
            deltas = layout.deltas(values, derived[k] if layout.nodes else {})
            self.seq += 1
            ev = envelope(EventType.RUN_UPDATE, self.run_id, self.epoch, self.seq)
            start = self._start + timedelta(minutes=bm * t) if self._start is not None else None
            ev.update(
                binIndex=t,
                binStartUtc=start.strftime("%Y-%m-%dT%H:%M:%SZ") if start else None,
                binMinutes=bm,
                status=status,
                watermark=self.watermark,
                lastBin=max(t, prev_last),
                revision=self.revision,
                deltas=deltas,
            )
            events.append(ev)
            for op, warning in self.hooks.warnings(self, t):
                self.seq += 1
                events.append(warning_event(self.run_id, self.epoch, self.seq, op, warning))
