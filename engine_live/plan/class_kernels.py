"""Compiled kernels of the class stages (SPEC §14): one pass over the cells, no temporaries.

`split_classes` and `split_linear` scale raw class parts to their totals, `step_class_queues`
steps per-class queue depths bin by bin. They are plain Python here; `compiled()` gives them
compiled by numba (`engine_live.plan.jit`: cached on disk), without optimisations that reorder
floating point (no fastmath), so a cell gets the same IEEE operations, in the same order, whatever
range it is evaluated in: batch, bin by bin and recovery agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np

from engine_live.plan.jit import compile_kernel
from engine_live.plan.queue_kernel import use_compiled_steps

Kernel = Callable[..., None]


class Kernels(NamedTuple):
    """The compiled kernels."""

    split_classes: Kernel
    split_linear: Kernel
    step_class_queues: Kernel


@cache
def compiled() -> Kernels:
    """The kernels compiled with numba, imported on first use: a model without classes never pays
    for the import (about 0.5 s) or the compilation."""
    global _linear_impl, _scale_impl  # the kernels call them: compiled first, so numba compiles the calls
    _linear_impl, _scale_impl = compile_kernel(_linear), compile_kernel(_scale)
    use_compiled_steps()  # numba is loaded now: the queues' recurrence may as well be compiled too
    return Kernels(compile_kernel(split_classes), compile_kernel(split_linear), compile_kernel(step_class_queues))


def _scale(
    V: np.ndarray,
    out_rows: np.ndarray,
    i: int,
    t_row: int,
    c0: int,
    raw: np.ndarray,
    back: np.ndarray,
    has_back: bool,
    mix: np.ndarray,
) -> None:
    """Member i's class rows over columns [c0, c0 + w) from its raw parts `raw` (K, w): `total · raw_c
    / Σ raw` where Σ raw > 0 (parts that already sum to the total are kept exactly), else the
    fallback's shares (`back`, when `has_back`) where they sum above 0, else the model mix."""
    k, w = raw.shape
    for j in range(w):
        col = c0 + j
        total = V[t_row, col]
        raw_sum = raw[0, j]
        for c in range(1, k):
            raw_sum = raw_sum + raw[c, j]
        if raw_sum > 0:
            for c in range(k):
                V[out_rows[c, i], col] = raw[c, j] if raw_sum == total else total * (raw[c, j] / raw_sum)
            continue
        back_sum = 0.0
        if has_back:
            back_sum = back[0, j]
            for c in range(1, k):
                back_sum = back_sum + back[c, j]
        if back_sum > 0:
            for c in range(k):
                V[out_rows[c, i], col] = total * (back[c, j] / back_sum)
        else:
            for c in range(k):
                V[out_rows[c, i], col] = total * mix[c]


_scale_impl: Callable[..., None] = _scale


def split_classes(
    V: np.ndarray,
    out_rows: np.ndarray,
    total_rows: np.ndarray,
    raw: np.ndarray,
    back: np.ndarray,
    mix: np.ndarray,
    c0: int,
) -> None:
    """`_scale` for every member, its raw and fallback parts given as arrays (K, n, w) (`back` empty
    when there is none)."""
    n = raw.shape[1]
    has_back = back.shape[0] > 0
    for i in range(n):
        member_back = back[:, i, :] if has_back else raw[:, i, :]
        _scale_impl(V, out_rows, i, total_rows[i], c0, raw[:, i, :], member_back, has_back, mix)


def _linear(
    V: np.ndarray,
    const: np.ndarray,
    coef: np.ndarray,
    rows: np.ndarray,
    lags: np.ndarray,
    out: np.ndarray,
    i: int,
    c0: int,
    t0: int,
) -> None:
    """The K linear forms of member i over columns [c0, c0 + w) into `out` (K, w): a constant, then
    each term in order (a row read before bin 0 adds nothing). Inner loops run along a row."""
    k, _, width = coef.shape
    w = out.shape[1]
    for c in range(k):
        for j in range(w):
            out[c, j] = const[c, i]
        for m in range(width):
            lag = lags[c, i, m]
            factor = coef[c, i, m]
            row = rows[c, i, m]
            for j in range(max(0, lag - t0), w):
                out[c, j] = out[c, j] + factor * V[row, c0 + j - lag]


_linear_impl: Callable[..., None] = _linear


def split_linear(
    V: np.ndarray,
    out_rows: np.ndarray,
    total_rows: np.ndarray,
    r_const: np.ndarray,
    r_coef: np.ndarray,
    r_rows: np.ndarray,
    r_lags: np.ndarray,
    b_const: np.ndarray,
    b_coef: np.ndarray,
    b_rows: np.ndarray,
    b_lags: np.ndarray,
    mix: np.ndarray,
    c0: int,
    t0: int,
    w: int,
) -> None:
    """`split_classes` of raw parts (and fallback parts, `b_*`, empty when none) that are linear forms
    over rows (`engine_live.plan.class_linear`), read straight from V: no closure, no temporary
    beyond one member's (K, w) block."""
    k, n = r_const.shape
    has_back = b_coef.shape[0] > 0
    raw = np.empty((k, w))
    back = np.empty((k, w))
    for i in range(n):
        _linear_impl(V, r_const, r_coef, r_rows, r_lags, raw, i, c0, t0)
        fall = False
        for j in range(w):
            raw_sum = raw[0, j]
            for c in range(1, k):
                raw_sum = raw_sum + raw[c, j]
            fall = fall or not raw_sum > 0
        if has_back and fall:  # the fallback parts only for a member that needs them somewhere
            _linear_impl(V, b_const, b_coef, b_rows, b_lags, back, i, c0, t0)
        _scale_impl(V, out_rows, i, total_rows[i], c0, raw, back, has_back and fall, mix)


def step_class_queues(
    V: np.ndarray,
    q_rows: np.ndarray,
    out_rows: np.ndarray,
    ovf_rows: np.ndarray,
    in_rows: np.ndarray,
    q_class: np.ndarray,
    out_class: np.ndarray,
    ovf_class: np.ndarray,
    initial: np.ndarray,
    mix: np.ndarray,
    c0: int,
    c1: int,
    from_start: bool,
) -> None:
    """Q_c[t] = (Q_c[t-1] + in_c[t]) · Q[t] / (Q[t-1] + Σ in[t]); outflow and overflow take the shares
    of that available content; the model mix when there is none. in_rows: (m, K, n), zero-row padded;
    non-finite inflows count as 0. `from_start`: c0 is bin 0 (initial depth by bin 0's inflow shares)."""
    m, k, n = in_rows.shape
    inflow = np.empty(k)
    prev = np.empty(k)
    for i in range(n):
        before = 0.0
        for col in range(c0, c1):
            whole = 0.0
            for c in range(k):
                s = 0.0
                for r in range(m):
                    x = V[in_rows[r, c, i], col]
                    if math.isfinite(x):
                        s = s + x
                inflow[c] = s
                whole = whole + s
            if col == c0:
                if from_start:
                    before = initial[i]
                    for c in range(k):
                        prev[c] = initial[i] * (inflow[c] / whole) if whole > 0 else initial[i] * mix[c]
                else:
                    before = V[q_rows[i], col - 1]
                    for c in range(k):
                        prev[c] = V[q_class[c, i], col - 1]
            queue = V[q_rows[i], col]
            out = V[out_rows[i], col]
            ovf = V[ovf_rows[i], col]
            den = before + whole
            if den > 0:
                rate = queue / den
                for c in range(k):
                    avail = prev[c] + inflow[c]
                    depth = avail * rate
                    share = avail / den
                    V[q_class[c, i], col] = depth
                    V[out_class[c, i], col] = out * share
                    V[ovf_class[c, i], col] = ovf * share
                    prev[c] = depth
            else:
                for c in range(k):
                    depth = queue * mix[c]
                    V[q_class[c, i], col] = depth
                    V[out_class[c, i], col] = out * mix[c]
                    V[ovf_class[c, i], col] = ovf * mix[c]
                    prev[c] = depth
            before = queue
