"""Stages of per-class rows (SPEC §14): class splits of series and per-class queue depths.

Like every stage they compute any bin range [t0, t1) from rows of earlier stages, so batch,
bin-by-bin and suffix evaluation give the same bits; a queue's classes step bin by bin (the
shares of a bin depend on the previous bin's per-class depth), all queues and classes together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine_live.expressions.kernels import Fn
from engine_live.plan.stages import Stage


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=den > 0)
    return out


def _sum(parts: Sequence[np.ndarray]) -> np.ndarray:
    acc = parts[0]
    for part in parts[1:]:
        acc = acc + part
    return acc


@dataclass
class ClassSplitGroup(Stage):
    """Series of one class-rule shape: `X_c = X · raw_c / Σ raw` (fallback shares, then the mix)."""

    rows: np.ndarray
    out_rows: np.ndarray  # (K, n)
    total_rows: np.ndarray  # (n,)
    raw: Sequence[Fn]  # K closures over the n members
    fallback: Sequence[Fn] | None
    mix: np.ndarray  # (K, 1)

    def _parts(self, fns: Sequence[Fn], V: np.ndarray, base: int, t0: int, t1: int) -> list[np.ndarray]:
        shape = (len(self.total_rows), t1 - t0)
        return [np.broadcast_to(fn(V, base, t0, t1), shape) for fn in fns]

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Write every class row of the members for bins [t0, t1)."""
        c0, c1 = t0 - base, t1 - base
        total = V[self.total_rows, c0:c1]
        raw = self._parts(self.raw, V, base, t0, t1)
        raw_sum = _sum(raw)
        ok = raw_sum > 0
        if self.fallback is not None:
            back = self._parts(self.fallback, V, base, t0, t1)
            back_sum = _sum(back)
            back_ok = back_sum > 0
        for c in range(len(raw)):
            value = total * self.mix[c]
            if self.fallback is not None:
                value = np.where(back_ok, total * _ratio(back[c], back_sum), value)
            V[self.out_rows[c], c0:c1] = np.where(ok, total * _ratio(raw[c], raw_sum), value)


@dataclass
class ClassQueueGroup(Stage):
    """Per-class depth, outflow and overflow of queues: shares of the content available in each bin."""

    rows: np.ndarray
    q_rows: np.ndarray  # (n,) totals
    out_rows: np.ndarray
    ovf_rows: np.ndarray
    in_rows: np.ndarray  # (m, K, n) class rows of the inflows, zero-row padded
    q_class: np.ndarray  # (K, n) outputs
    out_class: np.ndarray
    ovf_class: np.ndarray
    initial: np.ndarray  # (n,)
    mix: np.ndarray  # (K, 1)

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Step bins [t0, t1): Q_c[t] = (Q_c[t-1] + in_c[t]) · Q[t] / (Q[t-1] + Σ in[t]); the outflow and
        overflow take the shares of that available content (the model mix when there is none)."""
        c0, c1 = t0 - base, t1 - base
        raw_in = V[self.in_rows, c0:c1]  # (m, K, n, w)
        inflow = _sum([np.where(np.isfinite(one), one, 0.0) for one in raw_in])
        queue, out, ovf = V[self.q_rows, c0:c1], V[self.out_rows, c0:c1], V[self.ovf_rows, c0:c1]
        before = np.concatenate([(V[self.q_rows, c0 - 1] if t0 > 0 else self.initial)[:, None], queue[:, :-1]], axis=1)
        den = before + _sum(list(inflow))  # (n, w)
        has = den > 0
        rate = _ratio(queue, den)
        reset = np.where(has, 0.0, queue)[None, :, :] * self.mix[:, :, None]
        if t0 > 0:
            prev = V[self.q_class, c0 - 1]
        else:
            first = inflow[:, :, 0]
            whole = first.sum(axis=0)
            prev = np.where(whole > 0, self.initial * _ratio(first, whole), self.initial * self.mix)
        avail = np.empty(inflow.shape)
        depth = np.empty(inflow.shape)
        for j in range(c1 - c0):
            a, q = avail[:, :, j], depth[:, :, j]
            np.add(prev, inflow[:, :, j], out=a)
            np.multiply(a, rate[:, j], out=q)
            np.add(q, reset[:, :, j], out=q)
            prev = q
        shares = np.where(has[None, :, :], _ratio(avail, den[None, :, :]), self.mix[:, :, None])
        V[self.q_class, c0:c1] = depth
        V[self.out_class, c0:c1] = out[None, :, :] * shares
        V[self.ovf_class, c0:c1] = ovf[None, :, :] * shares
