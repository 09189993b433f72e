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


def rank(v: float, worst: str) -> tuple[float, float]:
    if worst == "min":
        return (-v, 0.0)
    if worst == "absmax":
        return (abs(v), v)
    return (v, 0.0)


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


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

    def offer(self, v: float) -> None:
        if (
            not self.stale
            and math.isfinite(v)
            and (math.isnan(self.worst_value) or rank(v, self.worst) > rank(self.worst_value, self.worst))
        ):
            self.worst_value = v

    def retire(self, v: float) -> None:
        if not self.stale and same(v, self.worst_value):
            self.stale = True

    def count(self) -> int:
        return len(self.order) + self.packed_n

    def first_bins(self) -> list[int]:
        if self.packed is None:
            return self.order[:FIRST_BINS]
        if len(self.packed[0]) >= FIRST_BINS:
            return self.packed[0][:FIRST_BINS].tolist()  # type: ignore[no-any-return]
        return (self.packed[0].tolist() + self.order)[:FIRST_BINS]  # type: ignore[no-any-return]

    def packed_past(self, b: int) -> bool:
        """True when bin `b` is not after the packed bins (the entry must be unpacked to touch it)."""
        return b <= self.packed_last

    def unpack(self) -> None:
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
        vals = np.fromiter((self.values[b] for b in self.order), dtype=np.float64, count=n)
        if self.packed is not None:
            bins, vals = np.concatenate([self.packed[0], bins]), np.concatenate([self.packed[1], vals])
        self.packed, self.packed_n, self.packed_last = (bins, vals), len(bins), int(bins[-1])
        self.values, self.order = {}, []

    def put(self, b: int, v: float) -> bool:
        """Flag bin `b` with `v` (unpacked entries); True when that changed anything."""
        values, order = self.values, self.order
        old = values.get(b)
        if old is None:
            values[b] = v
            if not order or b > order[-1]:
                order.append(b)
            else:
                bisect.insort(order, b)
            self.offer(v)
            return True
        if same(old, v):
            return False
        values[b] = v
        self.retire(old)
        self.offer(v)
        return True

    def drop(self, b: int) -> bool:
        """Unflag bin `b` (unpacked entries); True when it was flagged."""
        old = self.values.pop(b, None)
        if old is None:
            return False
        self.retire(old)
        del self.order[bisect.bisect_left(self.order, b)]
        return True

    def wire_worst(self) -> float | None:
        """`to_wire_value(worst_now())`, rounded again only when the worst value changed."""
        w = self.worst_now()
        if w is not self.wire_of:
            self.wire, self.wire_of = to_wire_value(w), w
        return self.wire

    def worst_now(self) -> float:
        if self.stale:
            self.unpack()
            finite = [v for v in self.values.values() if math.isfinite(v)]
            self.worst_value = max(finite, key=lambda v: rank(v, self.worst)) if finite else math.nan
            self.stale = False
        return self.worst_value


Spec = tuple[str, str, "MessageFn | None", "str | None"]  # severity, worst rule, message function, message


def matches(e: Entry, sp: Spec) -> bool:
    severity, worst, fn, message = sp
    return (
        e.severity == severity and e.worst == worst and e.message_fn is fn and (fn is not None or e.message == message)
    )


__all__ = ["FIRST_BINS", "Aggregate", "Entry", "Key", "MessageFn", "Spec", "Worst", "matches", "rank", "same"]
