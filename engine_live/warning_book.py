"""The warning book of a run: per-bin flags aggregated per key, with add/clear diffs (SPEC §3, §12.6).

A key is `(code, nodeId, seriesId or None)`. Per key the book keeps every flagged bin with its
value (a dict plus a sorted bin list), and aggregates them into the wire warning
`{code, severity, nodeId, seriesId?, bins (first 5, ascending), count, value (worst), message}`.

- `set_flags` replaces the flags of the bins it is given (a re-evaluated bin that is no longer
  flagged is removed); work is O(bins given · log) — the worst value is updated incrementally and
  only recomputed over the key's bins when the current worst bin is removed or replaced.
- `take_changes` diffs every key touched since the last call against what was last published:
  `add` when a key appears or anything of its warning dict changes, `clear` (carrying the warning
  as last published) when its last bin is gone. A key that appears and disappears between two
  calls produces nothing. Changes are sorted by (code, nodeId, seriesId).
- "Worst" per key is `max`, `min` or `absmax` (largest |v|, the positive one on a tie) over the
  flagged values, NaN ignored; it is null when no value is finite. The result does not depend on
  the order flags were set in, so batch and bin-by-bin runs agree.
- `to_state` / `from_state` give plain JSON-able dicts (non-finite values as "NaN", "Infinity",
  "-Infinity"). Message functions are not persisted: the restored book keeps the last message text
  until the next `set_flags` for that key brings its function again.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from engine_live.warning_entry import (
    FIRST_BINS,
    Aggregate,
    Entry,
    Key,
    MessageFn,
    Spec,
    Worst,
    matches,
    rank,
    same,
)

_SMALL = 64  # up to this many unflagged bins per call are checked one by one


class WarningChange(NamedTuple):
    op: Literal["add", "clear"]
    warning: dict[str, Any]


def _visible(w: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a published warning stale: its first bins, worst value or severity. A count that
    only grows (a persistent warning on every new bin) is not re-sent on its own — that would be
    one event per warning per bin; clients read the current count from state and snapshots."""
    return (w["bins"], w["value"], w["severity"])


def sort_key(key: Key) -> tuple[str, str, str]:
    return (key[0], key[1] or "", key[2] or "")


_sort_key = sort_key


def _enc(v: float) -> float | str:
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _dec(v: float | str) -> float:
    return float({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(v, v)) if isinstance(v, str) else float(v)


class WarningBook:
    def __init__(self) -> None:
        self._entries: dict[Key, Entry] = {}
        self._published: dict[Key, dict[str, Any]] = {}
        self._dirty: set[Key] = set()

    def set_flags(
        self,
        key: Key,
        bins: Sequence[int] | NDArray[Any],
        mask: Sequence[bool] | NDArray[Any],
        values: Sequence[float] | NDArray[Any],
        *,
        severity: str = "warning",
        message: str | None = None,
        message_fn: MessageFn | None = None,
        worst: Worst = "max",
    ) -> None:
        """Replace the flags of `bins` for `key`: bins where `mask` is true are flagged with their value,
        the others are unflagged. `message_fn` (or a fixed `message`) gives the warning text."""
        mask_a = np.asarray(mask, dtype=np.bool_)
        entry = self._entries.get(key)
        if entry is None:
            if not mask_a.any():
                return
            entry = self._entries[key] = Entry(severity, worst)
            changed = True
        else:
            changed = entry.severity != severity or entry.worst != worst
            if entry.worst != worst:
                entry.worst, entry.stale = worst, True
            entry.severity = severity
            entry.spec = None
        if message is not None or message_fn is not None:
            changed = changed or entry.message_fn is not message_fn or (message_fn is None and entry.message != message)
            entry.message, entry.message_fn = message, message_fn
        bins_a = np.asarray(bins, dtype=np.int64)
        vals_a = np.asarray(values, dtype=np.float64)
        on_bins, on_vals = bins_a[mask_a].tolist(), vals_a[mask_a].tolist()
        if len(bins_a) and entry.packed_past(int(bins_a.min())):
            entry.unpack()
        if not entry.count():
            entry.values = dict(zip(on_bins, on_vals, strict=True))
            entry.order = sorted(entry.values)
            entry.worst_value, entry.stale = math.nan, True
            changed = changed or bool(on_bins)
        else:
            changed = self._update(entry, on_bins, on_vals, bins_a[~mask_a]) or changed
        if changed:
            entry.cached = None
            self._dirty.add(key)
        if not entry.count():
            del self._entries[key]

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
        """`set_flags` for one bin, with plain Python values (the per-bin hot path of live runs)."""
        entry = self._entries.get(key)
        if entry is None:
            if not flagged:
                return
            entry = self._entries[key] = Entry(severity, worst)
            changed = True
        else:
            changed = entry.severity != severity or entry.worst != worst
            if entry.worst != worst:
                entry.worst, entry.stale = worst, True
            entry.severity = severity
            entry.spec = None
        if message is not None or message_fn is not None:
            changed = changed or entry.message_fn is not message_fn or (message_fn is None and entry.message != message)
            entry.message, entry.message_fn = message, message_fn
        if entry.packed is not None and entry.packed_past(b):
            entry.unpack()
        values, order = entry.values, entry.order
        old = values.get(b)
        if flagged:
            if old is None:
                values[b] = value
                if not order or b > order[-1]:
                    order.append(b)
                else:
                    bisect.insort(order, b)
                entry.offer(value)
                changed = True
            elif not same(old, value):
                values[b] = value
                entry.retire(old)
                entry.offer(value)
                changed = True
        elif old is not None:
            entry.retire(values.pop(b))
            del order[bisect.bisect_left(order, b)]
            changed = True
        if changed:
            entry.cached = None
            self._dirty.add(key)
        if not values and entry.packed is None:
            del self._entries[key]

    def append_flags(self, b: int, keys: Sequence[Key], values: Sequence[float],
                     specs: Sequence[tuple[str, str, MessageFn | None, str | None]]) -> None:  # fmt: skip
        """Flag bin `b` for each key with its value and (severity, worst, message_fn, message): the
        per-bin path of a newly published bin. Keys where `b` is not past every flagged bin, or
        whose spec changed, take `set_flag`. A key whose first bins and worst value stay as they
        were is not marked dirty: `take_changes` would find nothing visible to send for it."""
        entries, dirty = self._entries, self._dirty
        for key, v, sp in zip(keys, values, specs, strict=True):
            e = entries.get(key)
            if e is not None and e.spec is not sp:
                severity, worst, fn, message = sp
                if (e.severity == severity and e.worst == worst and e.message_fn is fn
                        and (fn is not None or e.message == message)):  # fmt: skip
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

    @staticmethod
    def _update(entry: Entry, on_bins: list[int], on_vals: list[float], off: NDArray[np.int64]) -> bool:
        changed = False
        values, order = entry.values, entry.order
        for b, v in zip(on_bins, on_vals, strict=True):
            old = values.get(b)
            if old is None:
                values[b] = v
                if not order or b > order[-1]:
                    order.append(b)
                else:
                    bisect.insort(order, b)
                entry.offer(v)
                changed = True
            elif not same(old, v):
                values[b] = v
                entry.retire(old)
                entry.offer(v)
                changed = True
        if len(off) <= _SMALL:
            gone = [b for b in off.tolist() if b in values]
        else:
            existing = np.fromiter(values.keys(), dtype=np.int64, count=len(values))
            gone = np.intersect1d(existing, off).tolist()
        for b in gone:
            entry.retire(values.pop(b))
            del order[bisect.bisect_left(order, b)]
            changed = True
        return changed

    def _warning(self, key: Key, entry: Entry) -> dict[str, Any]:
        if entry.cached is None:
            code, node_id, series_id = key
            bins = entry.first_bins()
            value = entry.wire_worst()
            agg = Aggregate(code, node_id, series_id, tuple(bins), entry.count(), value)
            if entry.message_fn is not None:
                entry.message = entry.message_fn(agg)
            elif entry.message is None:
                entry.message = f"{code}: {agg.count} bin(s)"
            w: dict[str, Any] = {"code": code, "severity": entry.severity, "nodeId": node_id}
            if series_id is not None:
                w["seriesId"] = series_id
            w.update(bins=bins, count=agg.count, value=value, message=entry.message)
            entry.cached = w
        return entry.cached

    def take_changes(self) -> list[WarningChange]:
        """Diffs since the last call, sorted by (code, nodeId, seriesId)."""
        changes: list[WarningChange] = []
        for key in sorted(self._dirty, key=_sort_key):
            change = self._take(key)
            if change is not None:
                changes.append(change)
        self._dirty.clear()
        return changes

    def _take(self, key: Key) -> WarningChange | None:
        """The change of one dirty key against what was last published (and publish it)."""
        entry = self._entries.get(key)
        prev = self._published.get(key)
        if entry is None:
            if prev is None:
                return None
            del self._published[key]
            return WarningChange("clear", _copy(prev))
        if prev is not None and _visible(prev) == (entry.first_bins(), entry.wire_worst(), entry.severity):
            return None  # nothing visible changed: the message is not even built
        cur = self._warning(key, entry)
        if prev is not None and _visible(cur) == _visible(prev):
            return None
        self._published[key] = _copy(cur)
        return WarningChange("add", _copy(cur))

    def append_block(self, keys: Sequence[Key], bins: Sequence[list[int]], values: Sequence[list[float]],
                     specs: Sequence[Spec]) -> int:  # fmt: skip
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
        return n

    def active(self) -> list[dict[str, Any]]:
        """Every current warning, sorted by key (run.json `warnings`)."""
        return [_copy(self._warning(k, self._entries[k])) for k in sorted(self._entries, key=_sort_key)]

    def flagged_bins(self, key: Key) -> list[int]:
        """All flagged bins of a key, ascending (empty when the key is not active)."""
        entry = self._entries.get(key)
        if entry is None:
            return []
        entry.unpack()
        return list(entry.order)

    def __len__(self) -> int:
        return len(self._entries)

    def to_state(self) -> dict[str, Any]:
        entries = []
        for key in sorted(self._entries, key=_sort_key):
            e = self._entries[key]
            e.unpack()
            w = self._warning(key, e)
            entries.append(
                {
                    "key": list(key),
                    "severity": e.severity,
                    "worst": e.worst,
                    "message": w["message"],
                    "bins": list(e.order),
                    "values": [_enc(e.values[b]) for b in e.order],
                }
            )
        return {
            "version": 1,
            "entries": entries,
            "published": [
                {"key": list(k), "warning": _copy(self._published[k])} for k in sorted(self._published, key=_sort_key)
            ],
            "dirty": [list(k) for k in sorted(self._dirty, key=_sort_key)],
        }

    # -- snapshot parts (`hooks_state`): O(1) or O(keys) views on the loop, bulk loads on restore ----
    def published_view(self) -> dict[Key, dict[str, Any]]:
        """A shallow copy of what was last published (its warning dicts are never mutated)."""
        return dict(self._published)

    def dirty_keys(self) -> tuple[Key, ...]:
        return tuple(self._dirty)

    def keys(self) -> list[Key]:
        return list(self._entries)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._entries))

    def entry_cells(self, key: Key) -> tuple[list[int], list[float]]:
        """(bins ascending, values) of a key's flags (empty when the key is not active)."""
        entry = self._entries.get(key)
        if entry is None:
            return [], []
        bins, vals = (entry.packed[0].tolist(), entry.packed[1].tolist()) if entry.packed is not None else ([], [])
        return bins + entry.order, vals + [entry.values[b] for b in entry.order]

    def load_entry(self, key: Key, bins: NDArray[np.int64], values: NDArray[np.float64], worst_value: float, *,
                   severity: str, worst: str, message_fn: MessageFn | None = None,
                   message: str | None = None) -> None:  # fmt: skip
        """Install a key's flags as a restore found them (`bins` ascending, `worst_value` already
        computed), packed as arrays: O(1) here, unpacked only when a change reaches back into them."""
        if not len(bins):
            return
        e = Entry(severity, worst)
        e.packed, e.packed_n, e.packed_last = (bins, values), len(bins), int(bins[-1])
        e.worst_value, e.stale = worst_value, False
        e.message, e.message_fn = message, message_fn
        self._entries[key] = e

    def load_published(self, key: Key, warning: dict[str, Any]) -> None:
        self._published[key] = _copy(warning)

    def mark_dirty(self, key: Key) -> None:
        self._dirty.add(key)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WarningBook:
        if state.get("version") != 1:
            raise ValueError(f"unsupported warning book state version {state.get('version')!r}")
        book = cls()
        for item in state["entries"]:
            e = Entry(item["severity"], item["worst"])
            e.values = {int(b): _dec(v) for b, v in zip(item["bins"], item["values"], strict=True)}
            e.order = sorted(e.values)
            e.stale = True
            e.message = item["message"]
            book._entries[_key(item["key"])] = e
        for item in state["published"]:
            book._published[_key(item["key"])] = _copy(item["warning"])
        book._dirty = {_key(k) for k in state["dirty"]}
        return book


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


def _key(raw: Sequence[Any]) -> Key:
    code, node_id, series_id = raw
    return (str(code), node_id, series_id)


def _copy(w: dict[str, Any]) -> dict[str, Any]:
    out = dict(w)
    out["bins"] = list(w["bins"])
    return out


__all__ = ["FIRST_BINS", "Aggregate", "Key", "MessageFn", "Spec", "WarningBook", "WarningChange", "Worst", "sort_key"]
