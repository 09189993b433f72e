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
    """The append paths of `WarningBook` (which provides `set_flag`, `_take` and the entries)."""

    _entries: dict[Key, Entry]
    _dirty: set[Key]

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
        """Flag or unflag one bin of a key (`WarningBook.set_flag`)."""
        raise NotImplementedError

    def _take(self, key: Key) -> Any:
        raise NotImplementedError

    def append_flags(
        self,
        bin_index: int,
        keys: Sequence[Key],
        values: Sequence[float],
        specs: Sequence[tuple[str, str, MessageFn | None, str | None]],
    ) -> None:
        """Flag bin `bin_index` for each key with its value and (severity, worst, message_fn, message):
        the per-bin path of a newly published bin. Keys where the bin is not past every flagged bin,
        or whose spec changed, take `set_flag`. A key whose first bins and worst value stay as they
        were is not marked dirty: `take_changes` would find nothing visible to send for it."""
        entries, dirty = self._entries, self._dirty
        for key, value, spec in zip(keys, values, specs, strict=True):
            entry = entries.get(key)
            if entry is not None and entry.spec is not spec and matches(entry, spec):
                entry.spec = spec
            order = entry.order if entry is not None else None
            if entry is None or entry.spec is not spec or bin_index <= (order[-1] if order else entry.packed_last):
                severity, worst, fn, message = spec
                self.set_flag(
                    key,
                    bin_index,
                    True,
                    value,
                    severity=severity,
                    message=message,
                    message_fn=fn,
                    worst=worst,  # type: ignore[arg-type]
                )
                continue
            was = entry.worst_value
            entry.values[bin_index] = value
            order.append(bin_index)  # type: ignore[union-attr]
            if (
                not entry.stale
                and math.isfinite(value)
                and (was != was or rank(value, entry.worst) > rank(was, entry.worst))
            ):
                entry.worst_value = value
            entry.cached = None
            if entry.worst_value is not was or entry.stale or len(order) + entry.packed_n <= FIRST_BINS:  # type: ignore[arg-type]
                dirty.add(key)  # else only the count grew: nothing a client sees changed (`_visible`)
            entry.maybe_pack()

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
        for key, key_bins, key_values, spec in zip(keys, bins, values, specs, strict=True):
            entry = self._entries.get(key)
            i = 0
            if entry is None or (entry.spec is not spec and not matches(entry, spec)):
                severity, worst, fn, message = spec
                self.set_flag(
                    key,
                    key_bins[0],
                    True,
                    key_values[0],
                    severity=severity,
                    message=message,
                    message_fn=fn,
                    worst=worst,  # type: ignore[arg-type]
                )
                n += self._take(key) is not None
                self._dirty.discard(key)
                entry, i = self._entries[key], 1
            entry.spec = spec
            last = entry.order[-1] if entry.order else entry.packed_last
            if i < len(key_bins) and key_bins[i] <= last:  # not an append: one by one
                for bin_index, value in zip(key_bins[i:], key_values[i:], strict=True):
                    self.append_flags(bin_index, (key,), (value,), (spec,))
                    n += self._take(key) is not None if key in self._dirty else 0
                    self._dirty.discard(key)
                continue
            n += self._append_run(key, entry, key_bins, key_values, i)
        return n

    def _append_run(self, key: Key, entry: Entry, key_bins: list[int], key_values: list[float], i: int) -> int:
        """Append cells key_bins[i:], taking the key where `append_flags` would mark it dirty."""
        forced = entry.stale  # appended while stale: dirty, and the take recomputes the worst value
        if forced:
            entry.worst_now()  # the same value (a max over every cell, ties keep the older one)
        positions, worst_after = _interesting(
            key_values[i:], entry.worst_value, entry.worst, FIRST_BINS - entry.count(), forced
        )
        n, start = 0, i
        for position, worst_value in zip(positions, worst_after, strict=True):
            j = i + position
            entry.values.update(zip(key_bins[start : j + 1], key_values[start : j + 1], strict=True))
            entry.order.extend(key_bins[start : j + 1])
            entry.worst_value, entry.cached = worst_value, None
            n += self._take(key) is not None
            start = j + 1
        if start < len(key_bins):
            entry.values.update(zip(key_bins[start:], key_values[start:], strict=True))
            entry.order.extend(key_bins[start:])
            entry.cached = None
        entry.maybe_pack()
        return n


def _interesting(
    values: list[float], worst_value: float, rule: str, first: int, forced: bool
) -> tuple[list[int], list[float]]:
    """Positions of `values` (appended in order) where the worst value gets better, those before
    `first` (among the key's first bins) and position 0 when `forced`; with the worst value after each."""
    if rule in ("max", "min") and len(values) > 8:  # vectorized: a running maximum
        signed = np.asarray(values, dtype=np.float64)
        signed = signed if rule == "max" else -signed
        finite = np.isfinite(signed)
        finite_values = np.where(finite, signed, -np.inf)
        initial = -np.inf if worst_value != worst_value else (worst_value if rule == "max" else -worst_value)
        best = np.maximum.accumulate(np.concatenate(([initial], finite_values)))
        flags = finite & (finite_values > best[:-1])
        flags[: max(0, first)] = True
        flags[0] |= forced
        positions = np.flatnonzero(flags)
        after = best[1:][positions]
        sign = 1.0 if rule == "max" else -1.0
        worst = [worst_value if best_value == -np.inf else sign * best_value for best_value in after.tolist()]
        return positions.tolist(), worst
    out_positions: list[int] = []
    out_worst: list[float] = []
    for position, value in enumerate(values):
        better = math.isfinite(value) and (worst_value != worst_value or rank(value, rule) > rank(worst_value, rule))
        if better:
            worst_value = value
        if better or position < first or (forced and position == 0):
            out_positions.append(position)
            out_worst.append(worst_value)
    return out_positions, out_worst


__all__ = ["AppendPaths"]
