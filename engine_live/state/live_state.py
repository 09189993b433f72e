"""A live run's state as a value: `capture(run)` copies it, `restore(plan, state, hooks)` rebuilds it.

`capture` is taken on the event loop between two log records, so it must be cheap: it copies the
columns of `V` and `P` that hold anything (bins `base` .. max(watermark, lastBin)), the counters and
the hooks' state, and nothing else. Everything else of a `LiveRun` (delta layout, telemetry index,
column slack) is a pure function of the plan and the constructor arguments.

`restore` gives a run that behaves bit-identically to the captured one from then on: the same
column window (same `base` and the same number of columns, so the window slides at the same
records), the same epoch/seq/revision counters, the same `persisted_before` (a snapshot's state.json
records the segments its commit wrote), and hooks restored from their state — so the same future
records produce the same events with the same seq numbers. Which columns are held never changes an
event: only bins at or after lowest_correctable − lookback are ever read.

Hooks take part when they carry state: an object with `state()` and `from_state(state)` — or
`from_state(plan, state)`, as `DerivedHooks` has it. `from_state` may mutate the object (returns
None) or return a new hooks object (a classmethod constructor). Hooks with a `capture()` too
(DerivedHooks) hand the capture pointer copies whose `to_state()` the commit thread calls
(`engine_live.derived.hooks_state`); for the others, `state()` returns fresh JSON-able data.

Failure cases: a state captured from another plan (row names or telemetry series differ) or with
inconsistent matrix shapes raises `StateMismatchError` rather than restoring wrong rows.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from engine_live.derived.hooks_state import jsonable
from engine_live.errors import StateMismatchError
from engine_live.plan.compiler import Plan
from engine_live.protocol import RunStatus
from engine_live.state.live_run import BinHooks, LiveRun

STATE_VERSION = 1
Reload = Callable[[], tuple[NDArray[np.float64], NDArray[np.bool_]]]


@runtime_checkable
class StatefulHooks(Protocol):
    """Hooks whose state a snapshot carries (e.g. the derived-metrics hooks)."""

    def state(self) -> Any:
        """The hooks' state as plain data."""
        ...

    def from_state(self, *args: Any) -> Any:
        """Hooks restored from `state()`'s data."""
        ...


@dataclass(frozen=True)
class RunState:
    """Counters and the non-empty columns of a run. `V[:, k]` / `P[:, k]` are bin `base + k`."""

    run_id: str
    epoch: str
    status: str
    seq: int
    revision: int
    model_revision: int
    watermark: int
    last_bin: int
    base: int
    columns: int  # width of the run's matrix (so the window slides at the same records)
    grace_bins: int
    retention_bins: int
    names: tuple[str, ...]
    telemetry_ids: tuple[str, ...]
    V: NDArray[np.float64] = field(repr=False)
    P: NDArray[np.bool_] = field(repr=False)
    hooks: Any = None
    slack: int | None = None  # the run's column slack (fixed at creation, kept across a PATCH)
    persisted_before: int | None = None  # bins below are in committed segments (None: not tracked)
    # Set by `CaptureMirror.capture`: V/P then hold only the bins delta.from_bin .. (not the whole held range)
    # and `CaptureMirror.materialize` (in the commit thread) must turn this into a full state before any use.
    delta: StateDelta | None = field(default=None, repr=False, compare=False)

    @property
    def held_to(self) -> int:
        """One past the last bin with anything in it."""
        return self.base + int(self.V.shape[1])

    def retained_range(self) -> tuple[int, int]:
        """[lo, hi) of the evaluated bins readable from this state (as `LiveRun.retained_range`)."""
        lowest = max(0, self.last_bin - self.retention_bins + 1)
        return max(self.base, lowest), self.last_bin + 1

    def counters(self, *, hooks: bool = True) -> dict[str, Any]:
        """The JSON-able part (everything but V, P); hooks' array states as lists (`hooks_state.jsonable`)."""
        return {
            "version": STATE_VERSION,
            "runId": self.run_id,
            "epoch": self.epoch,
            "status": self.status,
            "seq": self.seq,
            "revision": self.revision,
            "modelRevision": self.model_revision,
            "watermark": self.watermark,
            "lastBin": self.last_bin,
            "base": self.base,
            "columns": self.columns,
            "graceBins": self.grace_bins,
            "retentionBins": self.retention_bins,
            "names": list(self.names),
            "telemetryIds": list(self.telemetry_ids),
            "hooks": jsonable(self.hooks) if hooks else None,
            "slack": self.slack,
            "heldBins": [self.base, self.held_to],
            "persistedBefore": self.persisted_before,
        }

    @classmethod
    def from_counters(cls, c: dict[str, Any], V: NDArray[np.float64], P: NDArray[np.bool_]) -> RunState:
        """A RunState from its counters record and matrices; StateMismatchError for another version."""
        if c.get("version") != STATE_VERSION:
            raise StateMismatchError(f"unsupported snapshot state version {c.get('version')!r}")
        return cls(
            run_id=str(c["runId"]),
            epoch=str(c["epoch"]),
            status=str(c["status"]),
            seq=int(c["seq"]),
            revision=int(c["revision"]),
            model_revision=int(c["modelRevision"]),
            watermark=int(c["watermark"]),
            last_bin=int(c["lastBin"]),
            base=int(c["base"]),
            columns=int(c["columns"]),
            grace_bins=int(c["graceBins"]),
            retention_bins=int(c["retentionBins"]),
            names=tuple(c["names"]),
            telemetry_ids=tuple(c["telemetryIds"]),
            V=V,
            P=P,
            hooks=c.get("hooks"),
            slack=c.get("slack"),
            persisted_before=c.get("persistedBefore"),
        )


def _held(run: LiveRun) -> int:
    """How many columns from `base` hold anything (bins base .. max(watermark, lastBin))."""
    hi = max(run.watermark, run.last_bin) + 1
    return max(0, min(hi - run.base, int(run.V.shape[1])))


def capture(run: LiveRun) -> RunState:
    """Copy what a restore needs. O(rows × held bins); call between two records."""
    return _capture(run, 0, _held(run), None)


def _capture(run: LiveRun, k: int, n: int, delta: StateDelta | None) -> RunState:
    """The counters, the hooks' state and columns k..n of V/P."""
    hooks = run.hooks
    # On the event loop: hooks with `capture()` (DerivedHooks) hand over pointer copies whose
    # `to_state()` runs later, in the commit thread; `state()` must return fresh plain data.
    capture_fn = getattr(hooks, "capture", None)
    hook_state = capture_fn() if callable(capture_fn) else hooks.state() if isinstance(hooks, StatefulHooks) else None
    return RunState(
        run_id=run.run_id,
        epoch=run.epoch,
        status=run.status.value,
        seq=run.seq,
        revision=run.revision,
        model_revision=run.model_revision,
        watermark=run.watermark,
        last_bin=run.last_bin,
        base=run.base,
        columns=int(run.V.shape[1]),
        grace_bins=run.grace_bins,
        retention_bins=run.retention_bins,
        names=tuple(run.plan.names),
        telemetry_ids=run.telemetry_ids,
        V=run.V[:, k:n].copy(),
        P=run.P[:, k:n].copy(),
        hooks=hook_state,
        slack=run._slack,
        persisted_before=run.persisted_before,
        delta=delta,
    )


@dataclass(frozen=True)
class StateDelta:
    """What an incremental capture holds: bins from_bin .. base+held-1 (all of them when `full`)."""

    mirror: CaptureMirror
    number: int  # the mirror's capture count, this one included
    from_bin: int
    held: int  # columns of the whole captured range (bins base .. base+held-1)
    full: bool


class CaptureMirror:
    """Incremental capture for one run's snapshots: the matrix copy stays off the event loop.

    `capture(run)` (on the loop) copies the counters, the hooks' state and only the columns written
    since this mirror's previous capture (`LiveRun.dirty_from`; every write path lowers it); the
    first capture, one after `replace_plan` or after `invalidate()`, copies everything.
    `materialize(state)` (in the commit thread; commits are serialised, in capture order) rebuilds
    the full state from the previous one it holds plus the delta, and keeps it as the new mirror.

    Why that is exact: `base` never decreases within a run and a slide or grow keeps every held bin's
    contents, so a bin of [base, from_bin) holds what it held at the previous capture — a column of
    the mirror, or 0 for a bin past what that capture held (nothing writes past max(watermark,
    lastBin) between two records). A delta whose predecessor was not materialized (a lost capture,
    a failed commit) raises `StateMismatchError`; call `invalidate()` on the loop after any failure
    so the next capture is full.
    """

    def __init__(self) -> None:
        self.captures = 0  # loop side
        self.force_full = True  # loop side: the next capture copies everything
        self.applied = 0  # commit-thread side: the number of the delta the mirror reflects
        self.state: RunState | None = None  # commit-thread side
        self._reload: Reload | None = None  # seeded: builds the mirror's matrices at the first materialize

    @classmethod
    def seeded(cls, run: LiveRun, state: RunState, reload: Reload | None = None) -> CaptureMirror:
        """A mirror already holding `state`, the full state `run` was just restored from (recovery):
        the first capture after it copies only what changed since, not the whole matrix. With
        `reload` (the run adopted the state's matrices) the mirror's own copy of them is made by
        calling it, in the commit thread, at the first `materialize`."""
        if state.delta is not None:
            raise StateMismatchError("a mirror is seeded with a full state")
        mirror = cls()
        if reload is not None:  # never read the run's (adopted) arrays from the commit thread
            state = replace(state, V=np.zeros((state.V.shape[0], 0)), P=np.zeros((state.P.shape[0], 0), dtype=bool))
        mirror.state, mirror.force_full, mirror._reload = replace(state, hooks=None), False, reload
        run.capture_owner, run.dirty_from = mirror, sys.maxsize
        return mirror

    def invalidate(self) -> None:
        """On the loop: the next capture copies everything."""
        self.force_full = True

    def capture(self, run: LiveRun) -> RunState:
        """The run's state: incremental when this mirror took the previous capture, else full."""
        n = _held(run)
        full = self.force_full or run.capture_owner is not self
        k = 0 if full else min(max(run.dirty_from - run.base, 0), n)
        self.captures += 1
        state = _capture(run, k, n, StateDelta(self, self.captures, run.base + k, n, full))
        run.capture_owner, run.dirty_from, self.force_full = self, sys.maxsize, False
        return state

    def materialize(self, state: RunState) -> RunState:
        """The full state of an incremental capture (commit thread; in capture order)."""
        d = state.delta
        if d is None:
            return state
        if d.mirror is not self:
            raise StateMismatchError("an incremental capture taken by another mirror")
        if d.full:
            V, P = state.V, state.P
        else:
            if self._reload is not None and self.state is not None:
                V0, P0 = self._reload()
                self.state, self._reload = replace(self.state, V=V0, P=P0), None
            m = self.state
            if (
                m is None
                or d.number != self.applied + 1
                or m.names != state.names
                or m.telemetry_ids != state.telemetry_ids
                or state.base < m.base
            ):
                raise StateMismatchError("incremental snapshot capture does not follow the mirrored one")
            k = d.from_bin - state.base
            V = np.zeros((state.V.shape[0], d.held))
            P = np.zeros((state.P.shape[0], d.held), dtype=bool)
            s0 = state.base - m.base
            avail = min(k, int(m.V.shape[1]) - s0)
            if avail > 0:
                V[:, :avail] = m.V[:, s0 : s0 + avail]
                P[:, :avail] = m.P[:, s0 : s0 + avail]
            V[:, k:] = state.V
            P[:, k:] = state.P
        full_state = replace(state, V=V, P=P, delta=None)
        self.state, self.applied = full_state, d.number
        return full_state


def _window(a: NDArray[Any], columns: int) -> NDArray[Any] | None:
    """The array `a` is the leading columns of, when that one is C-contiguous and `columns` wide."""
    base = a.base
    if not isinstance(base, np.ndarray) or base.ndim != 2 or base.shape != (a.shape[0], columns):
        return None
    if not base.flags.c_contiguous or not base.flags.writeable or base.dtype != a.dtype:
        return None
    return base if a.__array_interface__["data"][0] == base.__array_interface__["data"][0] else None


def _restore_hooks(hooks: StatefulHooks, plan: Plan, state: Any) -> BinHooks:
    """`from_state(state)` or `from_state(plan, state)`; a returned hooks object replaces `hooks`."""
    fn = hooks.from_state
    try:
        arity = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        arity = 1
    made = fn(plan, state) if arity >= 2 else fn(state)
    if isinstance(made, BinHooks):
        return made
    assert isinstance(hooks, BinHooks), "stateful hooks must be BinHooks"
    return hooks


def restore(plan: Plan, state: RunState, hooks: BinHooks | None = None, *, adopt: bool = False) -> LiveRun:
    """A LiveRun equal to the captured one (same window, counters, hooks state). With `adopt`, when
    the state's V/P are the leading columns of arrays as wide as the run's window (a snapshot load
    decodes them so), the run takes those arrays instead of copying: the state must not be used
    afterwards."""
    if state.delta is not None:
        raise StateMismatchError("an incremental capture must be materialized before a restore")
    if tuple(plan.names) != state.names:
        raise StateMismatchError("the snapshot was taken from a different model (series rows differ)")
    n = state.V.shape[1]
    if state.P.shape != (len(state.telemetry_ids), n) or state.V.shape[0] != len(state.names) or n > state.columns:
        raise StateMismatchError("the snapshot's matrices have inconsistent shapes")
    if state.hooks is not None and isinstance(hooks, StatefulHooks):
        # from_state must not keep references into the state (DerivedHooks copies what it keeps);
        # plain JSON states of other hooks are deep-copied here
        own = isinstance(state.hooks, dict) and "cells" not in state.hooks
        hooks = _restore_hooks(hooks, plan, copy.deepcopy(state.hooks) if own else state.hooks)
    run = LiveRun(
        plan,
        run_id=state.run_id,
        epoch=state.epoch,
        grace_bins=state.grace_bins,
        retention_bins=state.retention_bins,
        hooks=hooks,
    )
    if run.telemetry_ids != state.telemetry_ids:
        raise StateMismatchError("the snapshot's telemetry series differ from the model's")
    full_v, full_p = (_window(state.V, state.columns), _window(state.P, state.columns)) if adopt else (None, None)
    if full_v is not None and full_p is not None:
        run.V, run.P = full_v, full_p
    else:
        run.V = np.zeros((plan.n_rows, state.columns))
        run.P = np.zeros((len(state.telemetry_ids), state.columns), dtype=bool)
        run.V[:, :n] = state.V
        run.P[:, :n] = state.P
    run.base = state.base
    run.persisted_before = state.persisted_before
    if state.slack is not None:
        run._slack = state.slack
    run.status = RunStatus(state.status)  # a restore is not a transition
    run.seq, run.revision, run.model_revision = state.seq, state.revision, state.model_revision
    run.watermark, run.last_bin = state.watermark, state.last_bin
    return run


__all__ = ["CaptureMirror", "RunState", "StateDelta", "StatefulHooks", "capture", "restore"]
