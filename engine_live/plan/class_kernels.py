"""Compiled kernels of the class stages (SPEC §14): one pass over the cells, no temporaries.

`split_classes` and `split_class_rows` scale raw class parts to their totals, `step_class_queues`
steps per-class queue depths bin by bin. They are plain Python here; `compiled()` gives them
compiled by numba, once per machine (`cache=True`: `__pycache__` beside this file, or
`NUMBA_CACHE_DIR`), without optimisations that reorder floating point (no fastmath), so a cell gets
the same IEEE operations, in the same order, whatever range it is evaluated in: batch, bin by bin
and recovery agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np

Kernel = Callable[..., None]


class Kernels(NamedTuple):
    """The compiled kernels."""

    split_classes: Kernel
    split_class_rows: Kernel
    step_class_queues: Kernel


@cache
def compiled() -> Kernels:
    """The kernels compiled with numba, imported on first use: a model without classes never pays
    for the import (about 0.5 s) or the compilation."""
    from numba import njit

    jit = njit(cache=True, nogil=True)
    return Kernels(jit(split_classes), jit(split_class_rows), jit(step_class_queues))


def split_classes(
    V: np.ndarray,
    out_rows: np.ndarray,
    total_rows: np.ndarray,
    raw: np.ndarray,
    back: np.ndarray,
    mix: np.ndarray,
    c0: int,
) -> None:
    """`V[out_rows[c, i], c0 + j] = total · raw_c / Σ raw` where Σ raw > 0, else the fallback's shares
    (`back`, empty when none) where they sum above 0, else the model mix. raw, back: (K, n, w)."""
    k, n, w = raw.shape
    has_back = back.shape[0] > 0
    for i in range(n):
        t_row = total_rows[i]
        for j in range(w):
            total = V[t_row, c0 + j]
            raw_sum = raw[0, i, j]
            for c in range(1, k):
                raw_sum = raw_sum + raw[c, i, j]
            if raw_sum > 0:
                for c in range(k):  # parts that already sum to the total are kept exactly
                    part = raw[c, i, j]
                    V[out_rows[c, i], c0 + j] = part if raw_sum == total else total * (part / raw_sum)
                continue
            back_sum = 0.0
            if has_back:
                back_sum = back[0, i, j]
                for c in range(1, k):
                    back_sum = back_sum + back[c, i, j]
            if back_sum > 0:
                for c in range(k):
                    V[out_rows[c, i], c0 + j] = total * (back[c, i, j] / back_sum)
            else:
                for c in range(k):
                    V[out_rows[c, i], c0 + j] = total * mix[c]


def split_class_rows(
    V: np.ndarray,
    out_rows: np.ndarray,
    total_rows: np.ndarray,
    raw_rows: np.ndarray,
    lags: np.ndarray,
    mix: np.ndarray,
    c0: int,
    t0: int,
    w: int,
) -> None:
    """`split_classes` of raw parts that are rows read `lags[c]` bins back (a reference or a SHIFT of
    one; before bin 0 they read 0), straight from V: no closure, no copy."""
    k, n = raw_rows.shape
    raw = np.empty(k)
    for i in range(n):
        t_row = total_rows[i]
        for j in range(w):
            raw_sum = 0.0
            for c in range(k):
                lag = lags[c]
                x = V[raw_rows[c, i], c0 + j - lag] if t0 + j - lag >= 0 else 0.0
                raw[c] = x
                raw_sum = x if c == 0 else raw_sum + x
            total = V[t_row, c0 + j]
            if raw_sum > 0:
                for c in range(k):
                    V[out_rows[c, i], c0 + j] = raw[c] if raw_sum == total else total * (raw[c] / raw_sum)
            else:
                for c in range(k):
                    V[out_rows[c, i], c0 + j] = total * mix[c]


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
