"""A cache bounded by bytes that evicts the least recently used entry first (SPEC §10: cache bytes).

The stream keeps derived encodings (a `nodes` filter's trimmed `run_update`, the text of an event,
a new subscriber's snapshot) so that many clients share one copy. Whatever a client can make
distinct — a filter is any subset of the nodes — must not grow memory: every such copy lives in a
`ByteLRU` with a byte budget, and `stats()` reports what it holds.

A value's cost is its `len()` — bytes and text are their length; other values report their own
estimate — plus `ENTRY_OVERHEAD` (the key, the dict slot, the object headers); a value larger than
the whole budget is not kept at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sized
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["ENTRY_OVERHEAD", "ByteLRU", "CacheStats"]

ENTRY_OVERHEAD = 160
V = TypeVar("V", bound=Sized)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What a cache holds and how it has been used."""

    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class ByteLRU(Generic[V]):
    """Sized values under hashable keys, at most `max_bytes` in total (0: keep nothing)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("a cache budget cannot be negative")
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        """The cost of what is held (values plus `ENTRY_OVERHEAD` each)."""
        return self._bytes

    def get(self, key: Hashable) -> V | None:
        """The value under `key` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is None:
            self._misses += 1
            return None
        self._hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Keep `value` under `key`, evicting the least recently used entries to stay in budget."""
        self.discard(key)
        cost = len(value) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        self._items[key] = value
        self._bytes += cost
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old) + ENTRY_OVERHEAD
            self._evictions += 1

    def discard(self, key: Hashable) -> None:
        """Forget `key` (no-op when absent)."""
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old) + ENTRY_OVERHEAD

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
        self._bytes = 0

    def stats(self) -> CacheStats:
        """Entries, bytes, budget and the hit / miss / eviction counts."""
        return CacheStats(len(self._items), self._bytes, self.max_bytes, self._hits, self._misses, self._evictions)
