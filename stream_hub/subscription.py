"""One subscriber's view of a run: an optional replay from history, then a bounded live queue.

Slow-client policy (SPEC §7), applied synchronously when `offer` overflows the bound:
1. coalesce: a queued `run_update` superseded by a later queued one for the same `binIndex` is
   dropped and the survivor lists the dropped seqs in `skipped` (superseded queued `progress`
   heartbeats are dropped too; they carry no seq);
2. still over the bound → the queue is cleared and the client is owed `{"type": "resync"}` plus a
   snapshot; it is on probation until its queue next drains empty;
3. overflowing again while on probation → closed with 4008 (`SlowConsumerError`'s close code).

The consumer side is `poll()` / `next()`, which yield `Delivery`, `Control`, `Heartbeat`, `Resync`
and finally `Close` items; the WebSocket endpoint turns them into frames.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine_live.errors import SlowConsumerError
from engine_live.protocol import close_code_for
from stream_hub.encodings import EventEncodings
from stream_hub.history import HubEvent, RunHistory

__all__ = ["Close", "Control", "Delivery", "Heartbeat", "HubCounters", "Outgoing", "Resync", "Subscription"]

SLOW_CLOSE_CODE: int = close_code_for(SlowConsumerError)
MAX_CONTROL = 16


@dataclass(slots=True)
class HubCounters:
    """Hub-wide counters shared by every subscription (read through `Hub.stats()`)."""

    coalesced: int = 0  # events dropped because a later run_update for the same bin superseded them
    dropped: int = 0  # events discarded by a resync or a 4008 close
    resyncs: int = 0
    slow_closes: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for the client, encoded on demand (as bytes or as text) through the hub's encodings."""

    event: HubEvent
    nodes: frozenset[str] | None
    skipped: tuple[int, ...]
    encodings: EventEncodings
    compact: bool = False  # the client asked for compact `run_update`s
    base: HubEvent | None = None  # compact: the `run_update` this client received before this one
    classes: frozenset[str] | None = None  # only these classes in every `byClass` (None: all)

    @property
    def payload(self) -> bytes:
        """The bytes: the publisher's own unless a `nodes` or `classes` filter trims deltas, `skipped`
        is set or the client takes compact `run_update`s."""
        if self.compact:
            return self.encodings.compact(self.event, self.nodes, self.base, self.skipped, self.classes)
        return self.encodings.payload(self.event, self.nodes, self.skipped, self.classes)

    @property
    def text(self) -> str:
        """The payload as text, decoded once and shared by every client with the same filters (and base)."""
        if self.compact:
            return self.encodings.compact_text(self.event, self.nodes, self.base, self.skipped, self.classes)
        return self.encodings.text(self.event, self.nodes, self.skipped, self.classes)


@dataclass(frozen=True, slots=True)
class Control:
    """A small server message for this client only (pong, error), already encoded."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Time for a `progress` heartbeat."""


@dataclass(frozen=True, slots=True)
class Resync:
    """The client fell behind: send `resync` and a snapshot."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the client's socket with `code`; the last item a subscription yields."""

    code: int
    reason: str = ""
    urgent: bool = False  # True: skip whatever is still queued (4008)


Outgoing = Delivery | Control | Heartbeat | Resync | Close


@dataclass(slots=True)
class _Entry:
    event: HubEvent
    skipped: tuple[int, ...] = field(default=())


class Subscription:
    """Created by `Hub.subscribe`; `recovered`, `epoch` and `seq` answer the `subscribed` message."""

    def __init__(
        self,
        run_id: str,
        history: RunHistory,
        *,
        nodes: frozenset[str] | None,
        recovered: bool,
        replay_after: int,
        max_queue: int,
        counters: HubCounters,
        detach: Callable[[Subscription], None],
        encodings: EventEncodings,
        compact: bool = False,
        classes: frozenset[str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.nodes = nodes
        self.classes = classes  # `byClass` trimmed to these, in events and snapshots (None: every class)
        self.compact = compact
        self._last_update: HubEvent | None = None  # compact: the last run_update delivered (the next one's base)
        self.recovered = recovered
        self.epoch = history.epoch
        self.seq = history.head  # head when subscribing
        self.last_seq = replay_after if recovered else history.head  # last seq'd event delivered
        self._history = history
        self._replay_next = replay_after + 1 if recovered else history.head + 1
        self._replay_end = history.head
        self._max = max_queue
        self._counters = counters
        self._detach = detach
        self._encodings = encodings
        self._queue: deque[_Entry] = deque()
        self._control: deque[bytes] = deque()
        self._heartbeat_due = False
        self._resync_pending = False
        self._probation = False
        self._close: Close | None = None
        self._wakeup = asyncio.Event()
        self.aborted = asyncio.Event()  # set on a 4008 close, so a sender stuck in send() can be cancelled
        self.delivered = 0

    @property
    def depth(self) -> int:
        """Events still to send: queued plus not yet replayed."""
        return len(self._queue) + max(0, self._replay_end - self._replay_next + 1)

    @property
    def closed(self) -> bool:
        """True once a close was requested."""
        return self._close is not None

    # -- producer side (synchronous, called by the hub) -------------------------------------------
    def offer(self, ev: HubEvent) -> None:
        """Queue a published event; applies the slow-client policy when over the bound."""
        if self._close is not None:
            return
        self._queue.append(_Entry(ev))
        if len(self._queue) > self._max:
            self._overflow()
        self._wakeup.set()

    def push_control(self, payload: bytes) -> None:
        """Queue a small server message (pong, error); beyond a few pending ones they are dropped."""
        if self._close is None and len(self._control) < MAX_CONTROL:
            self._control.append(payload)
            self._wakeup.set()

    def request_heartbeat(self) -> None:
        """Owe the client a heartbeat (sent before queued events)."""
        if self._close is None:
            self._heartbeat_due = True
            self._wakeup.set()

    def request_resync(self) -> None:
        """Force a resync (e.g. the run changed epoch): drop what is queued, owe a snapshot."""
        if self._close is not None:
            return
        self._counters.dropped += len(self._queue)
        self._counters.resyncs += 1
        self._queue.clear()
        self._replay_next, self._replay_end = 1, 0
        self._last_update = None  # after the snapshot: a key update with the layout
        self._resync_pending = True
        self._wakeup.set()

    def close(self, code: int, reason: str = "", *, urgent: bool = False) -> None:
        """Close after what is queued, or at once (`urgent`: the queue is dropped and `aborted` set)."""
        if self._close is not None and not urgent:
            return
        self._close = Close(code, reason, urgent)
        if urgent:
            self._counters.dropped += len(self._queue)
            self._queue.clear()
            self.aborted.set()
        self._wakeup.set()

    def _overflow(self) -> None:
        self._coalesce()
        if len(self._queue) <= self._max:
            return
        if self._probation or self._resync_pending:
            self._counters.slow_closes += 1
            self.close(SLOW_CLOSE_CODE, "too slow", urgent=True)
            self._detach(self)
            return
        self._probation = True
        self.request_resync()

    def _coalesce(self) -> None:
        latest: dict[int, _Entry] = {}
        progress_seen = False
        kept: list[_Entry] = []
        for entry in reversed(self._queue):
            ev = entry.event
            if ev.type == "run_update" and ev.seqd and ev.bin_index is not None:
                survivor = latest.get(ev.bin_index)
                if survivor is not None:
                    survivor.skipped = (*survivor.skipped, ev.seq, *entry.skipped)
                    self._counters.coalesced += 1
                    continue
                latest[ev.bin_index] = entry
            elif ev.type == "progress" and not ev.seqd:
                if progress_seen:
                    self._counters.coalesced += 1
                    continue
                progress_seen = True
            kept.append(entry)
        kept.reverse()
        self._queue = deque(kept)

    # -- consumer side -----------------------------------------------------------------------------
    def resume_after_snapshot(self, epoch: str | None, seq: int) -> None:
        """The client now holds a snapshot at (epoch, seq): drop queued events it already covers, and
        replay from history the seq'd events after it that were published before they could be
        queued here (a shared snapshot may be older than this subscription or its last resync).
        The caller checked `Hub.can_resume(run_id, epoch, seq)` with no await since."""
        self.epoch = epoch
        self.last_seq = seq
        self._last_update = None
        kept = deque(e for e in self._queue if e.event.epoch == epoch and e.event.seq > seq)
        first_queued = next((e.event.seq for e in kept if e.event.seqd), self._history.head + 1)
        self._queue = kept
        self._replay_next, self._replay_end = seq + 1, first_queued - 1

    def poll(self) -> Outgoing | None:
        """The next thing to send, or None when there is nothing yet."""
        if self._close is not None and self._close.urgent:
            return self._close
        if self._control:
            return Control(self._control.popleft())
        if self._heartbeat_due:
            self._heartbeat_due = False
            return Heartbeat()
        if self._resync_pending:
            self._resync_pending = False
            return Resync()
        entry: _Entry | None = None
        if self._replay_next <= self._replay_end:
            ev = self._history.get(self.epoch or "", self._replay_next) if self.epoch is not None else None
            if ev is None:  # evicted while replaying: never a partial replay
                self.request_resync()
                return self.poll()
            self._replay_next += 1
            entry = _Entry(ev)
        elif self._queue:
            entry = self._queue.popleft()
            if not self._queue:
                self._probation = False
        if entry is not None:
            ev = entry.event
            if ev.seqd:
                self.last_seq = ev.seq
            self.delivered += 1
            skipped = tuple(sorted(entry.skipped))
            if self.compact and ev.type == "run_update":
                base, self._last_update = self._last_update, ev
                return Delivery(ev, self.nodes, skipped, self._encodings, True, base, self.classes)
            return Delivery(ev, self.nodes, skipped, self._encodings, self.compact, classes=self.classes)
        if self._close is not None:
            return self._close
        return None

    async def next(self) -> Outgoing:
        """The next item to send, waiting until there is one."""
        while True:
            item = self.poll()
            if item is not None:
                return item
            self._wakeup.clear()
            await self._wakeup.wait()
