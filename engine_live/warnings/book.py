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
- `append_flags` / `append_block` (`warning_append`): newly published bins, one or many, in
  bulk; a key is marked dirty only when something visible can change, so a persistent warning
  whose count merely grows costs no diff.
- Snapshots (`hooks_state`): `published_view`, `dirty_keys`, `entry_cells` for a capture;
  `load_entry` (packed arrays: `warning_entry.Entry`), `load_published`, `mark_dirty` for a
  restore. `to_state` / `from_state` give the older plain JSON-able form (non-finite values as
  "NaN", "Infinity", "-Infinity"; message functions not persisted).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from engine_live.warnings.append import AppendPaths
from engine_live.warnings.entry import (
    FIRST_BINS,
    Aggregate,
    Entry,
    Key,
    MessageFn,
    Spec,
    Worst,
)

_SMALL = 64  # up to this many unflagged bins per call are checked one by one


class WarningChange(NamedTuple):
    """One diff of `take_changes`: `add` (new or changed warning) or `clear` (as last published)."""

    op: Literal["add", "clear"]
    warning: dict[str, Any]


def _visible(warning: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a published warning stale: its first bins, worst value or severity. A count that
    only grows (a persistent warning on every new bin) is not re-sent on its own — that would be
    one event per warning per bin; clients read the current count from state and snapshots."""
    return (warning["bins"], warning["value"], warning["severity"])


def sort_key(key: Key) -> tuple[str, str, str]:
    """Order of keys: (code, nodeId, seriesId), None as ""."""
    return (key[0], key[1] or "", key[2] or "")


def _enc(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _dec(value: float | str) -> float:
    if isinstance(value, str):
        return float({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(value, value))
    return float(value)


class WarningBook(AppendPaths):
    """The flags of one run per warning key, their aggregated warnings and the diffs to publish."""

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
        got = self._entry_for(key, bool(mask_a.any()), severity, worst, message, message_fn)
        if got is None:
            return
        entry, changed = got
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
        bin_index: int,
        flagged: bool,
        value: float,
        *,
        severity: str = "warning",
        message: str | None = None,
        message_fn: MessageFn | None = None,
        worst: Worst = "max",
    ) -> None:
        """`set_flags` for one bin, with plain Python values (the per-bin hot path of live runs)."""
        got = self._entry_for(key, flagged, severity, worst, message, message_fn)
        if got is None:
            return
        entry, changed = got
        if entry.packed is not None and entry.packed_past(bin_index):
            entry.unpack()
        changed = (entry.put(bin_index, value) if flagged else entry.drop(bin_index)) or changed
        if changed:
            entry.cached = None
            self._dirty.add(key)
        if not entry.count():
            del self._entries[key]

    def _entry_for(
        self, key: Key, flagged: bool, severity: str, worst: str, message: str | None, message_fn: MessageFn | None
    ) -> tuple[Entry, bool] | None:
        """The key's entry with this severity, worst rule and message (created when `flagged`), and
        whether any of those changed; None when there is no entry and nothing to flag."""
        entry = self._entries.get(key)
        if entry is None:
            if not flagged:
                return None
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
        return entry, changed

    @staticmethod
    def _update(entry: Entry, on_bins: list[int], on_vals: list[float], off: NDArray[np.int64]) -> bool:
        changed = False
        values, order = entry.values, entry.order
        for bin_index, value in zip(on_bins, on_vals, strict=True):
            changed = entry.put(bin_index, value) or changed
        if len(off) <= _SMALL:
            gone = [bin_index for bin_index in off.tolist() if bin_index in values]
        else:
            existing = np.fromiter(values.keys(), dtype=np.int64, count=len(values))
            gone = np.intersect1d(existing, off).tolist()
        for bin_index in gone:
            entry.retire(values.pop(bin_index))
            del order[bisect.bisect_left(order, bin_index)]
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
            warning: dict[str, Any] = {"code": code, "severity": entry.severity, "nodeId": node_id}
            if series_id is not None:
                warning["seriesId"] = series_id
            warning.update(bins=bins, count=agg.count, value=value, message=entry.message)
            entry.cached = warning
        return entry.cached

    def take_changes(self) -> list[WarningChange]:
        """Diffs since the last call, sorted by (code, nodeId, seriesId)."""
        changes: list[WarningChange] = []
        for key in sorted(self._dirty, key=sort_key):
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

    def active(self) -> list[dict[str, Any]]:
        """Every current warning, sorted by key (run.json `warnings`)."""
        return [_copy(self._warning(key, self._entries[key])) for key in sorted(self._entries, key=sort_key)]

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
        """The plain JSON-able form of the whole book (version 1; message functions not kept)."""
        entries = []
        for key in sorted(self._entries, key=sort_key):
            entry = self._entries[key]
            entry.unpack()
            warning = self._warning(key, entry)
            entries.append(
                {
                    "key": list(key),
                    "severity": entry.severity,
                    "worst": entry.worst,
                    "message": warning["message"],
                    "bins": list(entry.order),
                    "values": [_enc(entry.values[bin_index]) for bin_index in entry.order],
                }
            )
        published = [
            {"key": list(key), "warning": _copy(self._published[key])} for key in sorted(self._published, key=sort_key)
        ]
        return {
            "version": 1,
            "entries": entries,
            "published": published,
            "dirty": [list(key) for key in sorted(self._dirty, key=sort_key)],
        }

    # -- snapshot parts (`hooks_state`): O(1) or O(keys) views on the loop, bulk loads on restore ----
    def published_view(self) -> dict[Key, dict[str, Any]]:
        """A shallow copy of what was last published (its warning dicts are never mutated)."""
        return dict(self._published)

    def dirty_keys(self) -> tuple[Key, ...]:
        """The keys touched since the last `take_changes`."""
        return tuple(self._dirty)

    def keys(self) -> list[Key]:
        """The active keys (insertion order)."""
        return list(self._entries)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._entries))

    def entry_cells(self, key: Key) -> tuple[list[int], list[float]]:
        """(bins ascending, values) of a key's flags (empty when the key is not active)."""
        entry = self._entries.get(key)
        if entry is None:
            return [], []
        bins, vals = (entry.packed[0].tolist(), entry.packed[1].tolist()) if entry.packed is not None else ([], [])
        return bins + entry.order, vals + [entry.values[bin_index] for bin_index in entry.order]

    def load_entry(
        self,
        key: Key,
        bins: NDArray[np.int64],
        values: NDArray[np.float64],
        worst_value: float,
        *,
        severity: str,
        worst: str,
        message_fn: MessageFn | None = None,
        message: str | None = None,
    ) -> None:
        """Install a key's flags as a restore found them (`bins` ascending, `worst_value` already
        computed), packed as arrays: O(1) here, unpacked only when a change reaches back into them."""
        if not len(bins):
            return
        entry = Entry(severity, worst)
        entry.packed, entry.packed_n, entry.packed_last = (bins, values), len(bins), int(bins[-1])
        entry.worst_value, entry.stale = worst_value, False
        entry.message, entry.message_fn = message, message_fn
        self._entries[key] = entry

    def load_published(self, key: Key, warning: dict[str, Any]) -> None:
        """Restore what was last published for a key."""
        self._published[key] = _copy(warning)

    def mark_dirty(self, key: Key) -> None:
        """Restore a key as touched since the last `take_changes`."""
        self._dirty.add(key)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WarningBook:
        """A book from its `to_state` form (ValueError for another version)."""
        if state.get("version") != 1:
            raise ValueError(f"unsupported warning book state version {state.get('version')!r}")
        book = cls()
        for item in state["entries"]:
            entry = Entry(item["severity"], item["worst"])
            entry.values = {
                int(bin_index): _dec(value) for bin_index, value in zip(item["bins"], item["values"], strict=True)
            }
            entry.order = sorted(entry.values)
            entry.stale = True
            entry.message = item["message"]
            book._entries[_key(item["key"])] = entry
        for item in state["published"]:
            book._published[_key(item["key"])] = _copy(item["warning"])
        book._dirty = {_key(key) for key in state["dirty"]}
        return book


def _key(raw: Sequence[Any]) -> Key:
    code, node_id, series_id = raw
    return (str(code), node_id, series_id)


def _copy(warning: dict[str, Any]) -> dict[str, Any]:
    out = dict(warning)
    out["bins"] = list(warning["bins"])
    return out


__all__ = ["FIRST_BINS", "Aggregate", "Key", "MessageFn", "Spec", "WarningBook", "WarningChange", "Worst", "sort_key"]
