"""The warning book's paths for newly published bins (`WarningBook` inherits them).

`append_flags` takes one new bin's flags for many keys in one lean loop (live publishing), and
`append_block` several new bins at once, per key (a quiet recovery replay): cells are appended in
bulk and a key is examined (`_take`) only where something a client sees can change — one of its
first bins, a better worst value, a stale worst value — exactly where `append_flags` would mark
it dirty. Both equal `set_flag` + `take_changes` bin by bin (property-tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine_live.warnings.entry import FIRST_BINS, Entry, Key, MessageFn, Spec, Worst, matches, rank


class AppendPaths:
    _entries: dict[Key, Entry]
    _dirty: set[Key]

    def set_flag(
        self,
        key: Key,
        b: int,
        flagged: bool,
        value: float,
        *,
        severity: str = "warning",
        message: str | None = None,
        message_fn: MessageFn | None = None,
        worst: Worst = "max",
    ) -> None:
        raise NotImplementedError

    def _take(self, key: Key) -> Any:
        raise NotImplementedError

    def append_flags(
        self,
        b: int,
        keys: Sequence[Key],
        values: Sequence[float],
        specs: Sequence[tuple[str, str, MessageFn | None, str | None]],
    ) -> None:
        """Flag bin `b` for each key with its value and (severity, worst, message_fn, message): the
        per-bin path of a newly published bin. Keys where `b` is not past every flagged bin, or
        whose spec changed, take `set_flag`. A key whose first bins and worst value stay as they
        were is not marked dirty: `take_changes` would find nothing visible to send for it."""
        entries, dirty = self._entries, self._dirty
        for key, v, sp in zip(keys, values, specs, strict=True):
            e = entries.get(key)
            if e is not None and e.spec is not sp and matches(e, sp):
                e.spec = sp
            order = e.order if e is not None else None
            if e is None or e.spec is not sp or b <= (order[-1] if order else e.packed_last):
                severity, worst, fn, message = sp
                self.set_flag(key, b, True, v, severity=severity, message=message, message_fn=fn, worst=worst)  # type: ignore[arg-type]
                continue
            was = e.worst_value
            e.values[b] = v
            order.append(b)  # type: ignore[union-attr]
            if not e.stale and math.isfinite(v) and (was != was or rank(v, e.worst) > rank(was, e.worst)):
                e.worst_value = v
            e.cached = None
            if e.worst_value is not was or e.stale or len(order) + e.packed_n <= FIRST_BINS:  # type: ignore[arg-type]
                dirty.add(key)  # else only the count grew: nothing a client sees changed (`_visible`)
            e.maybe_pack()

    def append_block(
        self, keys: Sequence[Key], bins: Sequence[list[int]], values: Sequence[list[float]], specs: Sequence[Spec]
    ) -> int:
        """Several newly published bins at once (a quiet replay): for each key its flagged bins
        (ascending, after every bin it has flagged) and values. Equivalent to `append_flags` +
        `take_changes` bin by bin — the same book and published warnings afterwards — and returns
        how many changes those calls would have returned. Cells are appended in bulk; the key is
        taken (`_take`) only at the bins where something visible can change (its first bins, a
        better worst value, a stale worst), exactly where `append_flags` marks it dirty."""
        n = 0
        for key, kb, kv, sp in zip(keys, bins, values, specs, strict=True):
            e = self._entries.get(key)
            i = 0
            if e is None or (e.spec is not sp and not matches(e, sp)):
                severity, worst, fn, message = sp
                self.set_flag(key, kb[0], True, kv[0], severity=severity, message=message, message_fn=fn, worst=worst)  # type: ignore[arg-type]
                n += self._take(key) is not None
                self._dirty.discard(key)
                e, i = self._entries[key], 1
            e.spec = sp
            if i < len(kb) and kb[i] <= (e.order[-1] if e.order else e.packed_last):  # not an append: one by one
                for b, v in zip(kb[i:], kv[i:], strict=True):
                    self.append_flags(b, (key,), (v,), (sp,))
                    n += self._take(key) is not None if key in self._dirty else 0
                    self._dirty.discard(key)
                continue
            n += self._append_run(key, e, kb, kv, i)
        return n

    def _append_run(self, key: Key, e: Entry, kb: list[int], kv: list[float], i: int) -> int:
        """Append cells kb[i:], taking the key where `append_flags` would mark it dirty."""
        forced = e.stale  # appended while stale: dirty, and the take recomputes the worst value
        if forced:
            e.worst_now()  # the same value (a max over every cell, ties keep the older one)
        pos, worst_at = _interesting(kv[i:], e.worst_value, e.worst, FIRST_BINS - e.count(), forced)
        n, start = 0, i
        for p, w in zip(pos, worst_at, strict=True):
            j = i + p
            e.values.update(zip(kb[start : j + 1], kv[start : j + 1], strict=True))
            e.order.extend(kb[start : j + 1])
            e.worst_value, e.cached = w, None
            n += self._take(key) is not None
            start = j + 1
        if start < len(kb):
            e.values.update(zip(kb[start:], kv[start:], strict=True))
            e.order.extend(kb[start:])
            e.cached = None
        e.maybe_pack()
        return n


def _interesting(vals: list[float], w: float, rule: str, first: int, forced: bool) -> tuple[list[int], list[float]]:
    """Positions p of `vals` (appended in order) where the worst value gets better, p < `first`
    (among the key's first bins) or p == 0 when `forced`; with the worst value after each."""
    if rule in ("max", "min") and len(vals) > 8:  # vectorized: a running maximum
        x = np.asarray(vals, dtype=np.float64)
        x = x if rule == "max" else -x
        fin = np.isfinite(x)
        xf = np.where(fin, x, -np.inf)
        w0 = -np.inf if w != w else (w if rule == "max" else -w)
        best = np.maximum.accumulate(np.concatenate(([w0], xf)))
        flags = fin & (xf > best[:-1])
        flags[: max(0, first)] = True
        flags[0] |= forced
        pos = np.flatnonzero(flags)
        after = best[1:][pos]
        sign = 1.0 if rule == "max" else -1.0
        worst = [w if b == -np.inf else sign * b for b in after.tolist()]
        return pos.tolist(), worst
    out_p: list[int] = []
    out_w: list[float] = []
    for p, v in enumerate(vals):
        better = math.isfinite(v) and (w != w or rank(v, rule) > rank(w, rule))
        if better:
            w = v
        if better or p < first or (forced and p == 0):
            out_p.append(p)
            out_w.append(w)
    return out_p, out_w


__all__ = ["AppendPaths"]
