"""One key's flags in the warning book (`warning_book`): the entry, its worst-value rule and spec.

An `Entry` holds `values` (bin → value) and `order` (its bins ascending); after a snapshot restore
`packed` holds the older flags as two arrays and `values`/`order` only the bins appended after them.
Anything but an append past the packed bins unpacks first. The worst value is kept incrementally
(`offer` / `retire`) and recomputed over all values only when the current worst one goes (`stale`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from engine_live.derived.node_metrics import to_wire_value

Key = tuple[str, str | None, str | None]
Worst = Literal["max", "min", "absmax"]
FIRST_BINS = 5
PACK_MIN = 512  # appended flags of a key kept as dict items before they are packed into arrays


@dataclass(frozen=True)
class Aggregate:
    """What a message function sees: the key and the (wire-rounded) aggregate."""

    code: str
    node_id: str | None
    series_id: str | None
    bins: tuple[int, ...]
    count: int
    value: float | None


MessageFn = Callable[[Aggregate], str]


def rank(value: float, worst: str) -> tuple[float, float]:
    """Sort key under a worst rule: the larger rank is worse (absmax: the positive one on a tie)."""
    if worst == "min":
        return (-value, 0.0)
    if worst == "absmax":
        return (abs(value), value)
    return (value, 0.0)


def same(left: float, right: float) -> bool:
    """Equal, NaN equal to NaN."""
    return left == right or (math.isnan(left) and math.isnan(right))


class Entry:
    """One key's flags: `values` (bin → value) and `order` (its bins ascending); after a restore,
    `packed` (bins ascending, values) holds the older flags as arrays and `values`/`order` only the
    bins after them (appends). Anything else than an append past the packed bins unpacks first."""

    __slots__ = (
        "cached",
        "message",
        "message_fn",
        "order",
        "packed",
        "packed_last",
        "packed_n",
        "severity",
        "spec",
        "stale",
        "values",
        "wire",
        "wire_of",
        "worst",
        "worst_value",
    )

    def __init__(self, severity: str, worst: str) -> None:
        self.values: dict[int, float] = {}
        self.order: list[int] = []
        self.packed: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None
        self.packed_n, self.packed_last = 0, -1  # len(packed bins), the last of them
        self.spec: tuple[Any, ...] | None = (
            None  # the (severity, worst, message_fn, message) `append_flags` last matched
        )
        self.wire_of: float | None = None  # the worst value `wire` was rounded from (identity)
        self.wire: float | None = None
        self.severity = severity
        self.worst = worst
        self.worst_value = math.nan
        self.stale = False
        self.message: str | None = None
        self.message_fn: MessageFn | None = None
        self.cached: dict[str, Any] | None = None

    def offer(self, value: float) -> None:
        """A value was flagged: it becomes the worst value when it is worse (unless stale)."""
        if (
            not self.stale
            and math.isfinite(value)
            and (math.isnan(self.worst_value) or rank(value, self.worst) > rank(self.worst_value, self.worst))
        ):
            self.worst_value = value

    def retire(self, value: float) -> None:
        """A value was unflagged: the worst value is stale when it was that value."""
        if not self.stale and same(value, self.worst_value):
            self.stale = True

    def count(self) -> int:
        """Flagged bins (packed ones included)."""
        return len(self.order) + self.packed_n

    def first_bins(self) -> list[int]:
        """The first FIRST_BINS flagged bins, ascending."""
        if self.packed is None:
            return self.order[:FIRST_BINS]
        if len(self.packed[0]) >= FIRST_BINS:
            return self.packed[0][:FIRST_BINS].tolist()  # type: ignore[no-any-return]
        return (self.packed[0].tolist() + self.order)[:FIRST_BINS]  # type: ignore[no-any-return]

    def packed_past(self, bin_index: int) -> bool:
        """True when the bin is not after the packed bins (the entry must be unpacked to touch it)."""
        return bin_index <= self.packed_last

    def unpack(self) -> None:
        """Move the packed flags back into `values` and `order`."""
        if self.packed is not None:
            bins, vals = self.packed[0].tolist(), self.packed[1].tolist()
            self.values = {**dict(zip(bins, vals, strict=True)), **self.values}
            self.order = bins + self.order
            self.packed, self.packed_n, self.packed_last = None, 0, -1

    def maybe_pack(self) -> None:
        """After appends: move the appended bins into the packed arrays once they are as many as
        the packed ones (and at least PACK_MIN) — 16 bytes a flag instead of ~100 as dict items,
        amortized O(1) per flag (the arrays grow geometrically)."""
        n = len(self.order)
        if n < PACK_MIN or n < self.packed_n:
            return
        bins = np.asarray(self.order, dtype=np.int64)
        vals = np.fromiter((self.values[bin_index] for bin_index in self.order), dtype=np.float64, count=n)
        if self.packed is not None:
            bins, vals = np.concatenate([self.packed[0], bins]), np.concatenate([self.packed[1], vals])
        self.packed, self.packed_n, self.packed_last = (bins, vals), len(bins), int(bins[-1])
        self.values, self.order = {}, []

    def put(self, bin_index: int, value: float) -> bool:
        """Flag a bin with `value` (unpacked entries); True when that changed anything."""
        values, order = self.values, self.order
        old = values.get(bin_index)
        if old is None:
            values[bin_index] = value
            if not order or bin_index > order[-1]:
                order.append(bin_index)
            else:
                bisect.insort(order, bin_index)
            self.offer(value)
            return True
        if same(old, value):
            return False
        values[bin_index] = value
        self.retire(old)
        self.offer(value)
        return True

    def drop(self, bin_index: int) -> bool:
        """Unflag a bin (unpacked entries); True when it was flagged."""
        old = self.values.pop(bin_index, None)
        if old is None:
            return False
        self.retire(old)
        del self.order[bisect.bisect_left(self.order, bin_index)]
        return True

    def wire_worst(self) -> float | None:
        """`to_wire_value(worst_now())`, rounded again only when the worst value changed."""
        worst = self.worst_now()
        if worst is not self.wire_of:
            self.wire, self.wire_of = to_wire_value(worst), worst
        return self.wire

    def worst_now(self) -> float:
        """The worst value, recomputed over every flag when stale (NaN: no finite value)."""
        if self.stale:
            self.unpack()
            finite = [v for v in self.values.values() if math.isfinite(v)]
            self.worst_value = max(finite, key=lambda v: rank(v, self.worst)) if finite else math.nan
            self.stale = False
        return self.worst_value


Spec = tuple[str, str, "MessageFn | None", "str | None"]  # severity, worst rule, message function, message


def matches(entry: Entry, spec: Spec) -> bool:
    """Whether an entry already has this (severity, worst rule, message function, message)."""
    severity, worst, fn, message = spec
    return (
        entry.severity == severity
        and entry.worst == worst
        and entry.message_fn is fn
        and (fn is not None or entry.message == message)
    )


__all__ = ["FIRST_BINS", "Aggregate", "Entry", "Key", "MessageFn", "Spec", "Worst", "matches", "rank", "same"]
