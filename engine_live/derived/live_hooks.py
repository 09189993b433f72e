"""`DerivedHooks`: derived metrics, warnings and wire rounding of a live run, vectorized over nodes.

Plugged into `LiveRun(plan, hooks=DerivedHooks(plan))`; LiveRun calls, for every published bin
range, `derived(run, t0, t1)` once and then `warnings(run, t)` per bin after its run_update.

- `wire` is `derived.round_wire` over the whole (values × bins) block (NaN stays NaN; orjson
  encodes it as null).
- `derived` runs `StackLayout.derive_block` (one stacked computation for all nodes) and returns
  the wire dicts per bin, equal to `NodeDerived.wire_bin` per node.
- `warnings` keeps one `WarningBook`. Flags — the `node_checks` rules for every node plus
  `nan_detected` for every evaluated series, exactly as `batch_run.collect_warnings` sets them —
  are computed as one (entities × bins) mask and value block. A mirror of what the book holds per
  bin lets only the (key, bin) cells that changed reach `set_flags`, so a quiet bin costs no
  Python work per node.

Dependencies: a bin's flags read the 13 bins before it (12-bin capacity window, then a 3-bin
streak) and the gap state of the 3 before it. LiveRun republishes only bins whose values or gap
state changed, so when bin t is (re)published the flags of t..t+13 (those already published)
are re-evaluated too; together with the first publication of every bin this makes the final
active set equal to `collect_warnings` over the final series (tested). Decision: the flags of
the re-evaluated later bins are reported in the warning updates of bin t.

State for snapshots: `state()` (the book, plus the last published bin) and
`DerivedHooks.from_state(plan, state)`; the mirror is rebuilt from the book.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from engine_live.derived.hooks_state import STATE_VERSION, Cells, HooksCapture, build_book
from engine_live.derived.node_checks import (
    CHECKS,
    CONSERVATION_TOLERANCE,
    EXCESS_TOLERANCE,
    NEGATIVE_TOLERANCE,
    STREAK_BINS,
)
from engine_live.derived.node_metrics import CAPACITY_WINDOW, BoolArray, FloatArray, round_wire
from engine_live.derived.stack import (
    QUEUE_KIND_CODES,
    StackedBlock,
    StackLayout,
    derive_stacked,
    to_wire_bins,
)
from engine_live.plan.compiler import ZERO, Plan
from engine_live.state.live_run import BinHooks, LiveRun
from engine_live.warnings.book import Key, MessageFn, WarningBook

CODES = tuple(CHECKS)
DEPENDENT_BINS = CAPACITY_WINDOW + STREAK_BINS - 2  # later bins whose flags read a bin (13)
NAN_CODE = "nan_detected"
MISMATCH_CODE = "class_totals_mismatch"  # SPEC §14: classes sent that do not sum to the total sent


def mismatch_entities(plan: Plan) -> list[tuple[Key, int]]:
    """(warning key, matrix row of `<source>@:mismatch`) of each telemetry-fed class source."""
    node_of = {sid: binding.id for binding in plan.graph.topo for sid in binding.fields.values()}
    return [
        ((MISMATCH_CODE, node_of.get(one.source), one.source), plan.row[one.mismatch])
        for one in plan.graph.class_inputs
    ]


Change = tuple[Literal["add", "clear"], dict[str, Any]]


def node_flag_block(layout: StackLayout, blk: StackedBlock) -> tuple[BoolArray, FloatArray]:
    """(codes × nodes × output bins) masks and values of every `CHECKS` code, as `node_flags`."""
    inputs, gap = blk.x, blk.gap
    arr, srv, queue = inputs["arrivals"], inputs["served"], inputs["queueDepth"]
    k, n = gap.shape
    mask = np.zeros((len(CODES), k, n), dtype=np.bool_)
    value = np.full((len(CODES), k, n), np.nan)
    not_queue = ~np.isin(layout.kind, QUEUE_KIND_CODES)[:, None]
    with np.errstate(all="ignore"):
        for code_index, series in enumerate((arr, srv, queue)):  # the three negative_* checks
            mask[code_index], value[code_index] = series < -NEGATIVE_TOLERANCE, series
        value[3] = srv - arr
        mask[3] = (value[3] > EXCESS_TOLERANCE) & not_queue
        value[4] = srv - blk.denom
        mask[4] = value[4] > EXCESS_TOLERANCE
        prev_queue = np.concatenate([np.full((k, 1), np.nan), queue[:, :-1]], axis=1)
        prev_gap = np.concatenate([np.ones((k, 1), dtype=np.bool_), gap[:, :-1]], axis=1)
        known = ~prev_gap & np.isfinite(prev_queue)
        value[5] = arr - srv - (queue - prev_queue)
        mask[5] = known & (np.abs(value[5]) > CONSERVATION_TOLERANCE) & layout.conservation[:, None]
        mask[6], value[6] = _streak(known & ~gap & (queue > prev_queue)), queue
        mask[7] = _streak(blk.applicable & ~blk.saturated & np.isfinite(blk.cap_value) & ~gap)
    mask[8] = gap
    mask[:7] &= ~gap
    return mask[:, :, blk.out :], value[:, :, blk.out :]


def _streak(flags: BoolArray) -> BoolArray:
    out = flags.copy()
    for back in range(1, STREAK_BINS):
        out[:, :back] = False
        out[:, back:] &= flags[:, :-back]
    return out


class DerivedHooks(BinHooks):
    """Derived metrics, warnings and wire rounding of one live run (entities = node checks, then NaN series)."""

    dependent_bins = DEPENDENT_BINS

    def __init__(self, plan: Plan, book: WarningBook | None = None, *, done: int = -1) -> None:
        """Fresh hooks, or (a PATCH) new hooks over the run's existing `book`: the mirror is rebuilt
        from the book for this plan's keys, the rest of the book's keys become orphans."""
        self.plan = plan
        self.layout = StackLayout.from_plan(plan)
        kind_of = plan.kind_of
        self._nan_sids = [
            sid for sid in plan.names if sid != ZERO and kind_of.get(sid) not in ("const", "telemetry", "file")
        ]
        self._nan_rows = np.array([plan.row[sid] for sid in self._nan_sids], dtype=np.intp)
        self._n_node = len(CODES) * len(self.layout.ids)
        mismatch = mismatch_entities(plan)
        self._mismatch_rows = np.array([row for _, row in mismatch], dtype=np.intp)
        self.entity_keys: tuple[Key, ...] = (
            *((code, node_id, None) for code in CODES for node_id in self.layout.ids),
            *((NAN_CODE, None, sid) for sid in self._nan_sids),
            *(key for key, _ in mismatch),
        )
        self._entity_specs = [key_spec(key) for key in self.entity_keys]
        self._done = done  # highest bin whose warnings were taken
        # bin → flagged entities, values: every flag the book holds for this layout's keys (arrays are
        # replaced, never mutated, so a capture is a shallow copy of this dict)
        self._mirror: dict[int, Cells] = {}
        self._orphans: tuple[Key, ...] = ()  # book keys outside the layout (nodes a PATCH removed)
        self.book = WarningBook()
        if book is not None and len(book):
            self.book, self._mirror = build_book(book_state(book, done), self.entity_keys, key_spec)
            at = set(self.entity_keys)
            self._orphans = tuple(key for key in book if key not in at)
        elif book is not None:
            self.book = book
        self._cache: tuple[int, int, int, BoolArray, FloatArray] | None = None  # t0, t1, hi, masks, values

    # -- BinHooks -------------------------------------------------------------------------------
    def wire(self, block: FloatArray) -> FloatArray:
        """Values as published (`round_wire`)."""
        return round_wire(block)

    def derived(self, run: LiveRun, t0: int, t1: int) -> list[dict[str, dict[str, Any]]]:
        """Per bin of [t0, t1), node id → its wire `derived{}` dict."""
        blk = self.prepare(run, t0, t1)
        stacked = derive_stacked(self.layout, blk, run.grid.bin_minutes, t1 - t0)
        ids = self.layout.ids
        return [dict(zip(ids, dicts, strict=True)) for dicts in to_wire_bins(stacked)]

    def quiet_changes(self, run: LiveRun, t0: int, t1: int) -> int:
        """Quiet replay: the flags of [t0, t1) as one block; bins never published before (the usual
        case) go to the book in bulk (`WarningBook.append_block`), others bin by bin."""
        self.prepare(run, t0, t1)
        if t0 <= self._done:
            return sum(len(self.warnings(run, t)) for t in range(t0, t1))
        assert self._cache is not None
        mask, value = self._cache[3], self._cache[4]
        self._cache = None
        for j in range(t1 - t0):  # new bins: every flagged cell is a change
            on = np.flatnonzero(mask[:, j])
            if on.size:
                self._mirror[t0 + j] = (on, value[on, j])
        rows = np.flatnonzero(mask.any(axis=1)).tolist()
        keys, specs = self.entity_keys, self._entity_specs
        bins, vals = [], []
        for entity in rows:
            cols = np.flatnonzero(mask[entity])
            bins.append((cols + t0).tolist())
            vals.append(value[entity, cols].tolist())
        self._done = t1 - 1
        return self.book.append_block([keys[entity] for entity in rows], bins, vals, [specs[entity] for entity in rows])

    def prepare(self, run: LiveRun, t0: int, t1: int) -> StackedBlock:
        """The flags of bins [t0, t1) and the published ones they reach, as one block for the
        `warnings` calls that follow."""
        hi = max(t1, min(t1 - 1 + DEPENDENT_BINS, self._done) + 1)
        blk = self.layout.gather(run.V, run.base, t0, hi, run.gaps)
        mask, value = self._flags(run, blk, t0, hi)
        self._cache = (t0, t1, hi, mask, value)
        return blk

    def warnings(self, run: LiveRun, bin_index: int) -> list[Change]:
        """The warning changes of a published bin (its flags and those of the later bins it reaches)."""
        hi = min(bin_index + DEPENDENT_BINS, max(self._done, bin_index)) + 1
        cache = self._cache
        if cache is not None and cache[0] <= bin_index < cache[1] and hi <= cache[2]:
            first, stop = bin_index - cache[0], hi - cache[0]
            mask, value = cache[3][:, first:stop], cache[4][:, first:stop]
            if bin_index == cache[1] - 1:
                self._cache = None
        else:
            blk = self.layout.gather(run.V, run.base, bin_index, hi, run.gaps)
            mask, value = self._flags(run, blk, bin_index, hi)
        self._feed(bin_index, hi, mask, value)
        self._done = max(self._done, bin_index)
        return [(change.op, change.warning) for change in self.book.take_changes()]

    # -- flags ----------------------------------------------------------------------------------
    def _flags(self, run: LiveRun, blk: StackedBlock, t0: int, t1: int) -> tuple[BoolArray, FloatArray]:
        """(entities × bins) masks and values for bins [t0, t1): node checks, then nan_detected."""
        width = t1 - t0
        node_mask, node_value = node_flag_block(self.layout, blk)
        nan_mask = ~np.isfinite(run.V[self._nan_rows, t0 - run.base : t1 - run.base])
        off = run.V[self._mismatch_rows, t0 - run.base : t1 - run.base]
        mask = np.concatenate([node_mask.reshape(self._n_node, width), nan_mask, off != 0])
        value = np.concatenate([node_value.reshape(self._n_node, width), np.zeros(nan_mask.shape), off])
        return mask, value

    def _feed(self, t0: int, t1: int, mask: BoolArray, value: FloatArray) -> None:
        """Give the book the cells of bins [t0, t1) that differ from what it holds."""
        width = t1 - t0
        old_mask = np.zeros(mask.shape, dtype=np.bool_)
        old_value = np.full(mask.shape, np.nan)
        for j in range(width):
            held = self._mirror.get(t0 + j)
            if held is not None:
                old_mask[held[0], j] = True
                old_value[held[0], j] = held[1]
        same = (value == old_value) | (np.isnan(value) & np.isnan(old_value))
        changed = (mask != old_mask) | (mask & ~same)
        rows = np.flatnonzero(changed.any(axis=1))
        if not rows.size:
            return
        if width == 1 and t0 > self._done:  # a newly published bin: every changed cell is a new flag
            row_list = rows.tolist()
            keys, specs = self.entity_keys, self._entity_specs
            self.book.append_flags(
                t0,
                [keys[entity] for entity in row_list],
                value[rows, 0].tolist(),
                [specs[entity] for entity in row_list],
            )
        elif width == 1:  # plain Python values, one scalar call per changed key
            cells = zip(rows.tolist(), mask[rows, 0].tolist(), value[rows, 0].tolist(), strict=True)
            for entity, flagged, cell_value in cells:
                self._set_one(entity, t0, flagged, cell_value)
        else:
            all_bins = np.arange(t0, t1, dtype=np.int64)
            blocks = zip(rows.tolist(), changed[rows], mask[rows], value[rows], strict=True)
            for entity, changed_bins, entity_mask, entity_value in blocks:
                self._set(entity, all_bins[changed_bins], entity_mask[changed_bins], entity_value[changed_bins])
        for j in np.flatnonzero(changed.any(axis=0)).tolist():
            on = np.flatnonzero(mask[:, j])
            if on.size:
                self._mirror[t0 + j] = (on, value[on, j])
            else:
                self._mirror.pop(t0 + j, None)

    def _set_one(self, entity: int, bin_index: int, flagged: bool, value: float) -> None:
        severity, worst, fn, message = self._entity_specs[entity]
        self.book.set_flag(
            self.entity_keys[entity],
            bin_index,
            flagged,
            value,
            severity=severity,
            message=message,
            message_fn=fn,
            worst=worst,  # type: ignore[arg-type]
        )

    def _set(
        self,
        entity: int,
        bins: Sequence[int] | NDArray[np.int64],
        mask: Sequence[bool] | BoolArray,
        value: Sequence[float] | FloatArray,
    ) -> None:
        severity, worst, fn, message = self._entity_specs[entity]
        self.book.set_flags(
            self.entity_keys[entity],
            bins,
            mask,
            value,
            severity=severity,
            message=message,
            message_fn=fn,
            worst=worst,  # type: ignore[arg-type]
        )

    # -- snapshots ------------------------------------------------------------------------------
    def for_plan(self, plan: Plan) -> DerivedHooks:
        """Hooks for a patched plan over this run's warning book (a PATCH)."""
        return DerivedHooks(plan, self.book, done=self._done)

    def active(self) -> list[dict[str, Any]]:
        """Every active warning, sorted by key (run.json's per-bin warnings)."""
        return self.book.active()

    def capture(self) -> HooksCapture:
        """The hooks' state between two records: pointer copies only (`hooks_state`)."""
        orphans = tuple((key, *self.book.entry_cells(key)) for key in self._orphans)
        return HooksCapture(
            self._done,
            self.entity_keys,
            dict(self._mirror),
            self.book.published_view(),
            self.book.dirty_keys(),
            orphans,
        )

    def state(self) -> dict[str, Any]:
        """The hooks' JSON-able state (version `STATE_VERSION`)."""
        return self.capture().to_state()

    @classmethod
    def from_state(cls, plan: Plan, state: dict[str, Any] | HooksCapture) -> DerivedHooks:
        """Hooks restored from `state()` or a capture (version 1 states too)."""
        if isinstance(state, HooksCapture):
            state = state.to_state()
        version = state.get("version")
        if version == 1:
            return cls._from_state_v1(plan, state)
        if version != STATE_VERSION:
            raise ValueError(f"unsupported hooks state version {version!r}")
        hooks = cls(plan, done=int(state["done"]))
        hooks.book, hooks._mirror = build_book(state, hooks.entity_keys, key_spec)
        at = set(hooks.entity_keys)
        hooks._orphans = tuple(key for key in hooks.book if key not in at)
        return hooks

    @classmethod
    def _from_state_v1(cls, plan: Plan, state: dict[str, Any]) -> DerivedHooks:
        """Snapshots written before version 2 (the whole book as JSON)."""
        return cls(plan, WarningBook.from_state(state["book"]), done=int(state["done"]))


def key_spec(key: Key) -> tuple[str, str, MessageFn | None, str | None]:
    """Severity, worst rule, message function or fixed message of a key, as `_set` gives them."""
    code, _node_id, sid = key
    if code == NAN_CODE:
        return "warning", "max", None, f"series '{sid}' has non-finite values"
    if code == MISMATCH_CODE:
        return "warning", "absmax", None, f"series '{sid}': the classes sent do not sum to the total sent"
    spec = CHECKS[code]
    return spec.severity, spec.worst, spec.message, None


def book_state(book: WarningBook, done: int) -> dict[str, Any]:
    """A version-2 state holding every key of `book` (to rebuild book + mirror for another layout)."""
    keys = tuple(book.keys())
    orphans = tuple((key, *book.entry_cells(key)) for key in keys)
    return HooksCapture(done, (), {}, book.published_view(), book.dirty_keys(), orphans).to_state()


__all__ = ["DerivedHooks", "node_flag_block"]
