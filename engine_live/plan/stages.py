"""Execution stages of a compiled plan. Each stage computes its rows for any bin range [t0, t1).

A stage reads only rows of earlier stages (any bin ≤ t1-1) and its own rows at earlier bins, so
running the stages in order over the whole grid (batch), over one bin (live), or over a suffix
(after a correction) gives the same bits. Recurrences (queues, SHIFT loops) step one bin at a
time, all members of a stage together as vectors.

`V` is the run matrix: `V[row, t - base]` holds series `row` at bin `t`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine_live.expressions.kernels import Fn
from engine_live.model.pcg32 import pmf_draws
from engine_live.plan.queue_kernel import compiled_steps, queue_series, step_bins

SHORT_RANGE = 8  # bins; longer ranges use the accumulate kernel


class Stage:
    """One step of a plan: computes its rows for bins [t0, t1)."""

    rows: np.ndarray  # rows this stage writes

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:  # pragma: no cover - abstract
        """Write this stage's rows for bins [t0, t1) into V."""
        raise NotImplementedError


@dataclass
class ExprGroup(Stage):
    """Expressions of one shape, evaluated together by their compiled closure."""

    rows: np.ndarray
    fn: Fn
    shape: str

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Evaluate the closure over [t0, t1) (NaN normalised to one bit pattern)."""
        res = self.fn(V, base, t0, t1)
        if res.size and np.isnan(res.min()):  # a reduction: no bool array on the common NaN-free path
            # one NaN bit pattern: which operand's NaN survives differs between numpy loops
            res = np.where(np.isnan(res), np.nan, res)
        if len(self.rows) == 1:
            V[int(self.rows[0]), t0 - base : t1 - base] = res[0]
        else:
            V[self.rows, t0 - base : t1 - base] = res


@dataclass
class ConstStage(Stage):
    """Every const series, copied from the values given for the whole grid."""

    rows: np.ndarray
    values: np.ndarray  # (k, n) for the whole grid; bins past n read as 0

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Copy the given values; bins past them read 0."""
        n = self.values.shape[1]
        hi = min(t1, n)
        if t0 < hi:
            V[self.rows, t0 - base : hi - base] = self.values[:, t0:hi]
        if hi < t1:
            V[self.rows, max(t0, hi) - base : t1 - base] = 0.0


@dataclass
class PmfStage(Stage):
    """A pmf sampled per bin (pcg32 draws from the node's seed)."""

    rows: np.ndarray
    values: tuple[float, ...]
    probabilities: tuple[float, ...]
    seed: int

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Draw bins [t0, t1) (the draws depend only on seed and bin)."""
        V[int(self.rows[0]), t0 - base : t1 - base] = pmf_draws(self.values, self.probabilities, self.seed, t0, t1 - t0)


def _san(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, 0.0)


@dataclass
class QueueGroup(Stage):
    """serviceWithBuffer queues of one level, stepped together one bin at a time (SPEC §2)."""

    rows: np.ndarray  # q rows, then outflow rows, then overflow rows
    q_rows: np.ndarray
    out_rows: np.ndarray
    ovf_rows: np.ndarray
    in_rows: np.ndarray  # (k,) main inflow (zero row when missing)
    extra_rows: np.ndarray  # (m, k) overflow sources joining the inflow, zero-row padded
    outflow_src: np.ndarray
    loss_src: np.ndarray
    initial: np.ndarray
    wip_num: np.ndarray  # nan = none
    wip_rows: np.ndarray  # -1 = none
    period: np.ndarray  # 0 = no dispatch schedule
    phase: np.ndarray
    cap_rows: np.ndarray  # -1 = none
    plan_queues: int = 0  # queues in the whole plan (set by the compiler): what the compiled kernel pays off over

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Step the queues over [t0, t1): bin by bin when short, cumulative sums when long."""
        c0, c1 = t0 - base, t1 - base
        inn = _san(V[self.in_rows, c0:c1])
        for extra in self.extra_rows:
            inn = inn + _san(V[extra, c0:c1])
        out = _san(V[self.outflow_src, c0:c1])
        dispatch = self.period > 0
        if dispatch.any():
            ts = np.arange(t0, t1)
            period, phase = np.where(dispatch, self.period, 1)[:, None], self.phase[:, None]
            gate = ~dispatch[:, None] | ((ts >= phase) & ((ts - phase) % period == 0))
            has_cap = (self.cap_rows >= 0)[:, None]
            cap = np.where(has_cap, _san(V[np.where(self.cap_rows >= 0, self.cap_rows, 0), c0:c1]), np.inf)
            out = np.where(gate, np.where(dispatch[:, None] & (cap < out), cap, out), 0.0)
        loss = _san(V[self.loss_src, c0:c1])
        has_wip = (self.wip_rows >= 0)[:, None]
        limit = np.where(has_wip, V[np.where(self.wip_rows >= 0, self.wip_rows, 0), c0:c1], self.wip_num[:, None])
        limit = np.where(np.isnan(limit), np.inf, limit)
        prev = V[self.q_rows, c0 - 1] if t0 > 0 else self.initial
        V[self.out_rows, c0:c1] = out
        kernel = compiled_steps(max(self.plan_queues, len(self.q_rows)) * (t1 - t0))
        if kernel is not None:
            kernel(V, self.q_rows, self.ovf_rows, c0, np.asarray(prev, dtype=np.float64), inn, out, loss, limit)
            return
        if t1 - t0 <= SHORT_RANGE:
            queues, ovf = step_bins(prev, inn, out, loss, limit)
            V[self.q_rows, c0:c1] = queues
            V[self.ovf_rows, c0:c1] = ovf
            return
        for i in range(len(self.q_rows)):
            queue, queue_ovf = queue_series(float(prev[i]), inn[i], out[i], loss[i], limit[i])
            V[self.q_rows[i], c0:c1] = queue
            V[self.ovf_rows[i], c0:c1] = queue_ovf


@dataclass
class CapStage(Stage):
    """Shared capacity: when D = Σd_i > C, each member's inflow is C·d_i/D (SPEC §2 Constraints)."""

    rows: np.ndarray  # capped outputs, member order
    demand_rows: np.ndarray
    cap_row: int

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Cap each member's demand to its share of the capacity when the total exceeds it."""
        c0, c1 = t0 - base, t1 - base
        raw = V[self.demand_rows, c0:c1]
        demand = np.where(np.isfinite(raw) & (raw > 0), raw, 0.0)
        total = demand[0].copy()
        for i in range(1, len(demand)):
            total = total + demand[i]
        cap = V[self.cap_row, c0:c1]
        V[self.rows, c0:c1] = np.where(total > cap, _div(cap * demand, total), raw)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(num, den)
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


@dataclass
class BinLoop(Stage):
    """A strongly connected part closed through SHIFT: its members step bin by bin, in order."""

    rows: np.ndarray
    members: Sequence[Stage]

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Run every member one bin at a time, in order."""
        members = self.members
        for t in range(t0, t1):
            for member in members:
                member.run(V, base, t, t + 1)
