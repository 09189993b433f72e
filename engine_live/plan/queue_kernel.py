"""The queue recurrence, exact and fast over long ranges.

    v[t] = ((Q[t-1] + in[t]) - out[t]) - loss[t];  Q[t] = MAX(0, v);  overflow = MAX(0, Q - L);  Q = MIN(Q, L)

`step_bins` applies it bin by bin, all queues of a group as one vector (live mode, short ranges).
`queue_series` gives the same bits for one queue over a long range without a Python step per bin:
`np.add.accumulate` is strictly sequential and `a - b` is exactly `a + (-b)` in IEEE arithmetic,
so the cumulative sum of the interleaved stream [Q0, in0, -out0, -loss0, in1, ...] reproduces the
recurrence bit for bit until the first bin that clips (v ≤ 0, v > L, or NaN). Clipped bins are
applied one at a time, and runs of bins that stay empty (Q = 0 and v ≤ 0 from zero) are skipped
in one step. Inputs are already sanitized (non-finite → 0) and L has NaN replaced by +inf.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine_live.plan.jit import compile_kernel

SCALAR_BINS = 16  # busy bins stepped as plain floats before switching to cumulative sums
COMPILED_CELLS = 2_000_000  # queue cells (queues x bins) from which the compiled kernel pays for numba's import


def write_steps(
    V: np.ndarray,
    q_rows: np.ndarray,
    ovf_rows: np.ndarray,
    c0: int,
    prev: np.ndarray,
    inn: np.ndarray,
    out: np.ndarray,
    loss: np.ndarray,
    limit: np.ndarray,
) -> None:
    """`step_bins` written straight into V's rows, one queue at a time (compiled by `compiled_steps`):
    the same IEEE operations in the same order, so the same bits."""
    k, w = inn.shape
    for i in range(k):
        p = prev[i]
        q_row, o_row = q_rows[i], ovf_rows[i]
        for j in range(w):
            v = ((p + inn[i, j]) - out[i, j]) - loss[i, j]
            q = v if v > 0 else 0.0
            lim = limit[i, j]
            ovf = 0.0
            if q > lim:
                ovf = q - lim
                q = lim
            V[q_row, c0 + j] = q
            V[o_row, c0 + j] = ovf
            p = q


_kernel: Callable[..., None] | None = None


def use_compiled_steps() -> Callable[..., None]:
    """Compile `write_steps` (or load it from numba's cache) and use it from now on, for every size."""
    global _kernel
    if _kernel is None:
        _kernel = compile_kernel(write_steps)
    return _kernel


def compiled_steps(cells: int) -> Callable[..., None] | None:
    """The compiled `write_steps` once it is in use (`flowtime serve` warms it up in the background at
    start: `engine_live.plan.warmup`), or for a big range (`COMPILED_CELLS`: numba's import and load,
    ~0.5 s, pay off there); None: `step_bins` / `queue_series` (the same bits)."""
    if _kernel is not None:
        return _kernel
    if cells >= COMPILED_CELLS:
        return use_compiled_steps()
    return None


def step_bins(
    prev: np.ndarray, inn: np.ndarray, out: np.ndarray, loss: np.ndarray, limit: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin reference: arrays (k, w); returns (Q, overflow) of shape (k, w)."""
    k, w = inn.shape
    q_all = np.empty((k, w))
    ovf_all = np.empty((k, w))
    for j in range(w):
        q = prev + inn[:, j] - out[:, j] - loss[:, j]
        q = np.where(q > 0, q, 0.0)
        lim = limit[:, j]
        over = q > lim
        ovf_all[:, j] = np.where(over, q - lim, 0.0)
        prev = np.where(over, lim, q)
        q_all[:, j] = prev
    return q_all, ovf_all


def queue_series(
    q0: float, inn: np.ndarray, out: np.ndarray, loss: np.ndarray, limit: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One queue over a range: 1-D inputs; returns (Q, overflow), bit-identical to `step_bins`."""
    n = len(inn)
    q = np.empty(n)
    ovf = np.zeros(n)
    if n == 0:
        return q, ovf
    neg_out, neg_loss = -out, -loss
    from_zero = ((0.0 + inn) + neg_out) + neg_loss
    stays_empty = (from_zero <= 0) | np.isnan(from_zero)
    stays_empty &= limit >= 0
    # next_busy[t] = first s >= t where the queue would not stay empty from zero (n if none)
    idx = np.where(stays_empty, n, np.arange(n))
    next_busy = np.minimum.accumulate(idx[::-1])[::-1]
    seq_buf = np.empty(3 * n + 1)
    inn_l, out_l, loss_l, lim_l = inn.tolist(), out.tolist(), loss.tolist(), limit.tolist()
    pos, prev = 0, float(q0)
    while pos < n:
        if prev == 0.0:
            busy_from = int(next_busy[pos])
            if busy_from > pos:
                q[pos:busy_from] = 0.0
                pos = busy_from
                continue
        # a short busy spell: plain float steps (the same IEEE operations, in the same order)
        stop = min(n, pos + SCALAR_BINS)
        while pos < stop:
            v = ((prev + inn_l[pos]) - out_l[pos]) - loss_l[pos]
            qq = v if v > 0 else 0.0
            lim = lim_l[pos]
            if qq > lim:
                ovf[pos] = qq - lim
                qq = lim
            q[pos] = qq
            prev = qq
            pos += 1
            if qq == 0.0:
                break
        else:
            pos, prev = _accumulate_until_clip(pos, prev, q, ovf, inn, neg_out, neg_loss, limit, seq_buf)
    return q, ovf


def _accumulate_until_clip(
    pos: int,
    prev: float,
    q: np.ndarray,
    ovf: np.ndarray,
    inn: np.ndarray,
    neg_out: np.ndarray,
    neg_loss: np.ndarray,
    limit: np.ndarray,
    seq_buf: np.ndarray,
) -> tuple[int, float]:
    """A long busy spell: chunks of cumulative sums, doubling, until the first clipped bin."""
    n, chunk = len(inn), 16
    while pos < n:
        end = min(n, pos + chunk)
        m = end - pos
        seq = seq_buf[: 3 * m + 1]
        seq[0] = prev
        seq[1::3] = inn[pos:end]
        seq[2::3] = neg_out[pos:end]
        seq[3::3] = neg_loss[pos:end]
        acc = np.add.accumulate(seq)[3::3]
        bad = ~((acc > 0) & (acc <= limit[pos:end]))
        if not bad.any():
            q[pos:end] = acc
            prev = float(acc[-1])
            pos = end
            chunk = min(chunk * 2, 4096)
            continue
        j = int(bad.argmax())
        q[pos : pos + j] = acc[:j]
        v = float(acc[j])
        qq = v if v > 0 else 0.0
        lim = float(limit[pos + j])
        if qq > lim:
            ovf[pos + j] = qq - lim
            qq = lim
        q[pos + j] = qq
        return pos + j + 1, qq
    return pos, prev
