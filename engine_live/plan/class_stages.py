"""Stages of per-class rows (SPEC §14): class splits of series and per-class queue depths.

Like every stage they compute any bin range [t0, t1) from rows of earlier stages, so batch,
bin-by-bin and suffix evaluation give the same bits; a queue's classes step bin by bin (the
shares of a bin depend on the previous bin's per-class depth). The cell work is compiled
(`engine_live.plan.class_kernels`); the raw class parts are expression closures like any group's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine_live.expressions.kernels import Fn
from engine_live.plan.class_kernels import compiled
from engine_live.plan.class_linear import LinearParts
from engine_live.plan.stages import Stage

_NO_BACK = np.empty((0, 0, 0))


@dataclass
class ClassSplitGroup(Stage):
    """Series of one class-rule shape: `X_c = X · raw_c / Σ raw` (fallback shares, then the mix)."""

    rows: np.ndarray
    out_rows: np.ndarray  # (K, n)
    total_rows: np.ndarray  # (n,)
    raw: Sequence[Fn]  # closures over the K·n raw parts, class-major: one, or one per class
    fallback: Sequence[Fn] | None
    mix: np.ndarray  # (K,)

    def _parts(self, fns: Sequence[Fn], V: np.ndarray, base: int, t0: int, t1: int) -> np.ndarray:
        k, n = self.out_rows.shape
        w = t1 - t0
        if len(fns) == 1:
            return np.ascontiguousarray(np.broadcast_to(fns[0](V, base, t0, t1), (k * n, w))).reshape(k, n, w)
        out = np.empty((k, n, w))
        for c, fn in enumerate(fns):
            out[c] = fn(V, base, t0, t1)
        return out

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Write every class row of the members for bins [t0, t1)."""
        raw = self._parts(self.raw, V, base, t0, t1)
        back = _NO_BACK if self.fallback is None else self._parts(self.fallback, V, base, t0, t1)
        compiled().split_classes(V, self.out_rows, self.total_rows, raw, back, self.mix, t0 - base)


@dataclass
class LinearSplitGroup(Stage):
    """A `ClassSplitGroup` whose raw (and fallback) parts are linear forms over rows (most groups;
    `engine_live.plan.class_linear`), evaluated by the kernel in place."""

    rows: np.ndarray
    out_rows: np.ndarray  # (K, n)
    total_rows: np.ndarray  # (n,)
    raw: LinearParts
    fallback: LinearParts
    mix: np.ndarray  # (K,)

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Write every class row of the members for bins [t0, t1)."""
        r, b = self.raw, self.fallback
        compiled().split_linear(
            V,
            self.out_rows,
            self.total_rows,
            r.const,
            r.coef,
            r.rows,
            r.lags,
            b.const,
            b.coef,
            b.rows,
            b.lags,
            self.mix,
            t0 - base,
            t0,
            t1 - t0,
        )


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
    mix: np.ndarray  # (K,)

    def run(self, V: np.ndarray, base: int, t0: int, t1: int) -> None:
        """Step bins [t0, t1): Q_c[t] = (Q_c[t-1] + in_c[t]) · Q[t] / (Q[t-1] + Σ in[t]); the outflow and
        overflow take the shares of that available content (the model mix when there is none)."""
        compiled().step_class_queues(
            V,
            self.q_rows,
            self.out_rows,
            self.ovf_rows,
            self.in_rows,
            self.q_class,
            self.out_class,
            self.ovf_class,
            self.initial,
            self.mix,
            t0 - base,
            t1 - base,
            t0 == 0,
        )
