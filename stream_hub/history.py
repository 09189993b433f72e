"""Hub events and the per-run history ring of seq'd events.

`HubEvent` wraps one published event: the envelope fields the hub needs and the bytes encoded once
by the publisher (per-client re-encodings live in `stream_hub.encodings`). `RunHistory` holds the
seq'd events of the current epoch, contiguous in seq, bounded by a count and a byte budget; the
oldest leave first.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HistoryRead", "HubEvent", "RunHistory"]

_uids = itertools.count(1)


@dataclass(frozen=True, slots=True, eq=False)
class HubEvent:
    """One published event: the envelope fields the hub needs and `data`, the shared encoding.

    The event dict itself is not kept: the history holds hundreds of `run_update`s, and the dict of
    one for 1,000 nodes is ~2 MB of Python objects against ~150 KB of bytes. Nothing derived from
    it is kept here either: per-client re-encodings (a `nodes` filter, the decoded text) live in
    the hub's bounded `EventEncodings`, keyed by `uid` (unique in the process, never reused)."""

    epoch: str
    seq: int
    type: str
    bin_index: int | None
    data: bytes
    seqd: bool
    uid: int = field(default_factory=lambda: next(_uids))

    @classmethod
    def from_event(cls, event: Mapping[str, Any], data: bytes, *, seqd: bool) -> HubEvent:
        """Wrap an event and its encoded bytes (`bin_index` is kept for `run_update` events only)."""
        bin_index = event.get("binIndex") if event.get("type") == "run_update" else None
        return cls(
            epoch=str(event["epoch"]),
            seq=int(event["seq"]),
            type=str(event.get("type", "")),
            bin_index=int(bin_index) if bin_index is not None else None,
            data=data,
            seqd=seqd,
        )


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """Result of `RunHistory.read_after`: the events, and how many wanted ones were already gone."""

    events: list[HubEvent]
    lost: int
    epoch_changed: bool


class RunHistory:
    """Seq'd events of one run's current epoch, contiguous in seq, oldest evicted first."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("history bounds must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.epoch: str | None = None
        self.head = 0  # last seq published in this epoch (0: none)
        self._events: deque[HubEvent] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._events)

    @property
    def size_bytes(self) -> int:
        """Encoded bytes of the events held."""
        return self._bytes

    @property
    def first_seq(self) -> int:
        """Lowest seq still held; `head + 1` when empty."""
        return self._events[0].seq if self._events else self.head + 1

    def reset(self, epoch: str, head: int = 0) -> None:
        """Empty the history and start `epoch`, whose last published seq is `head`."""
        self.epoch = epoch
        self.head = head
        self._events.clear()
        self._bytes = 0

    def append(self, ev: HubEvent) -> None:
        """Add the next seq'd event; a new epoch starts a new history. A seq gap is an engine bug."""
        if ev.epoch != self.epoch:
            self.reset(ev.epoch, ev.seq - 1)
        elif ev.seq != self.head + 1:
            raise ValueError(f"seq {ev.seq} does not follow head {self.head} in epoch {ev.epoch}")
        self._events.append(ev)
        self._bytes += len(ev.data)
        self.head = ev.seq
        while len(self._events) > self.max_events or (self._bytes > self.max_bytes and len(self._events) > 1):
            old = self._events.popleft()
            self._bytes -= len(old.data)

    def covers(self, epoch: str, after_seq: int) -> bool:
        """True when every event after `after_seq` up to the head is held (empty range included)."""
        if epoch != self.epoch or after_seq > self.head or after_seq < 0:
            return False
        return after_seq == self.head or self.first_seq <= after_seq + 1

    def get(self, epoch: str, seq: int) -> HubEvent | None:
        """The event of `epoch` with `seq`, or None when the history does not hold it."""
        if epoch != self.epoch or not self._events or not self.first_seq <= seq <= self.head:
            return None
        return self._events[seq - self.first_seq]

    def read_after(self, epoch: str, seq: int, limit: int) -> HistoryRead:
        """Up to `limit` events after (epoch, seq); what history no longer holds is counted as lost."""
        if epoch != self.epoch:
            start, lost, changed = self.first_seq, 0, True
        else:
            start = max(seq + 1, self.first_seq)
            lost, changed = start - (seq + 1), False
        out: list[HubEvent] = []
        first = self.first_seq
        for s in range(start, min(self.head, start + limit - 1) + 1):
            out.append(self._events[s - first])
        return HistoryRead(out, lost, changed)
