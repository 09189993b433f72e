"""The in-process stream hub: per-run history, fan-out to subscribers, resume rules (SPEC §7).

`publish` is synchronous and O(subscribers): it appends to history and to each subscriber's bounded
queue, never awaits and never encodes (the publisher encoded the event once; per-client encodings
happen lazily in the client's own task, only for a `nodes` filter, a coalesced `skipped` or a compact
client; when the run has compact clients, a `run_update`'s columns are taken from the dict here).

Resume rules of `subscribe(run_id, since, nodes)`:
- `since` names the last event seen, so a replay starts at seq + 1; `None` means seq 1 of the
  current epoch;
- the replay happens only when history holds the whole range (`recovered=True`); otherwise
  `recovered=False` and the caller sends one snapshot then live events (never a partial replay);
- an unknown epoch, a negative seq or a seq beyond the head → `recovered=False`.

Listeners (the Kafka sink) get every published event synchronously and must not block.

The hub also holds what every stream connection shares, each bounded (issue 12): the encodings of
events for `nodes` filters and text frames (`EventEncodings`, by bytes), the snapshots for new
subscribers (`SnapshotCache`, by bytes, built off the loop) and the connection limits
(`ConnectionGate`, in total and per client key).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine_live.protocol import CloseCode, Cursor
from stream_hub.connections import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_KEY, ConnectionGate
from stream_hub.encodings import DEFAULT_ENCODING_CACHE_BYTES, EventEncodings
from stream_hub.history import HistoryRead, HubEvent, RunHistory
from stream_hub.snapshots import DEFAULT_SNAPSHOT_CACHE_BYTES, SnapshotCache
from stream_hub.subscription import HubCounters, Subscription

__all__ = ["EventListener", "Hub", "HubLimits", "HubStats"]

log = logging.getLogger("flowtime.stream_hub")

EventListener = Callable[[str, HubEvent], None]


@dataclass(frozen=True, slots=True)
class HubLimits:
    """SPEC §12.16 defaults; the caches and connection limits of SPEC §10 (issue 12)."""

    history_events: int = 10_000
    history_bytes: int = 64 * 1024 * 1024
    client_queue: int = 1_000
    encoding_cache_bytes: int = DEFAULT_ENCODING_CACHE_BYTES
    snapshot_cache_bytes: int = DEFAULT_SNAPSHOT_CACHE_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_key: int = DEFAULT_MAX_CONNECTIONS_PER_KEY


@dataclass(frozen=True, slots=True)
class HubStats:
    """A snapshot of the hub's counters (`Hub.stats()`), for metrics."""

    runs: int
    clients: int
    published: int
    coalesced: int
    dropped: int
    resyncs: int
    slow_closes: int
    history_events: int
    history_bytes: int
    queue_depth_max: int
    connections: int
    connections_refused: int
    encoding_cache_bytes: int
    encoding_cache_evictions: int
    snapshot_cache_bytes: int
    snapshot_builds: int


@dataclass(slots=True)
class _Run:
    history: RunHistory
    subscribers: set[Subscription] = field(default_factory=set)
    closed: tuple[int, str] | None = None


class Hub:
    """Per-run history and subscribers; every method is synchronous and never blocks."""

    def __init__(self, limits: HubLimits | None = None) -> None:
        self.limits = limits or HubLimits()
        self._runs: dict[str, _Run] = {}
        self._listeners: list[EventListener] = []
        self._counters = HubCounters()
        self._published = 0
        self.encodings = EventEncodings(self.limits.encoding_cache_bytes)
        self.snapshots = SnapshotCache(self.limits.snapshot_cache_bytes)
        self.connections = ConnectionGate(self.limits.max_connections, self.limits.max_connections_per_key)

    # -- runs ---------------------------------------------------------------------------------------
    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            history = RunHistory(self.limits.history_events, self.limits.history_bytes)
            run = self._runs[run_id] = _Run(history)
        return run

    def ensure_run(self, run_id: str, epoch: str, head: int) -> None:
        """Register a run at (epoch, head) if the hub has not seen it yet (e.g. after a restart)."""
        run = self._run(run_id)
        if run.history.epoch is None:
            run.history.reset(epoch, head)

    def head(self, run_id: str) -> Cursor | None:
        """(epoch, seq) of the run's last published seq'd event; None for a run the hub has not seen."""
        run = self._runs.get(run_id)
        if run is None or run.history.epoch is None:
            return None
        return Cursor(run.history.epoch, run.history.head)

    def reset_epoch(self, run_id: str, epoch: str, head: int = 0) -> None:
        """Start a new epoch: history is cleared and every subscriber is owed a resync + snapshot."""
        run = self._run(run_id)
        run.history.reset(epoch, head)
        self.snapshots.forget(run_id)
        for sub in tuple(run.subscribers):
            sub.request_resync()

    def close_run(self, run_id: str, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close every subscriber after what is already queued; later subscribers are closed too."""
        run = self._run(run_id)
        run.closed = (code, reason)
        for sub in tuple(run.subscribers):
            sub.close(code, reason)
        run.subscribers.clear()

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutdown") -> None:
        """SIGTERM: close every subscriber after its queued events; runs stay open for recovery."""
        for run in self._runs.values():
            for sub in tuple(run.subscribers):
                sub.close(code, reason)
            run.subscribers.clear()
        self.snapshots.close()

    def drop_run(self, run_id: str, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Forget a run entirely (after `completedStreamSeconds`, or on delete)."""
        self.snapshots.forget(run_id)
        if run_id in self._runs:
            self.close_run(run_id, code, reason)
            del self._runs[run_id]

    # -- publishing ---------------------------------------------------------------------------------
    def add_listener(self, listener: EventListener) -> None:
        """Call `listener(run_id, event)` for every published event (must not block)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        """Stop calling a listener added with `add_listener`."""
        self._listeners.remove(listener)

    def publish(self, run_id: str, event: Mapping[str, Any], data: bytes, *, seqd: bool = True) -> HubEvent:
        """Record and fan out one event. Synchronous; never blocks on a client or a sink."""
        ev = HubEvent.from_event(event, data, seqd=seqd)
        run = self._run(run_id)
        if seqd:
            epoch_changed = run.history.epoch is not None and ev.epoch != run.history.epoch
            run.history.append(ev)
            if epoch_changed:
                for sub in tuple(run.subscribers):
                    sub.request_resync()
        self._published += 1
        compact = False
        for sub in tuple(run.subscribers):
            sub.offer(ev)
            compact = compact or sub.compact
        if compact:  # columns from the dict in hand: cheaper than decoding the bytes in a client's task
            self.encodings.prime(ev, event)
        for listener in self._listeners:
            try:
                listener(run_id, ev)
            except Exception:  # a sink bug must never stop the engine
                log.exception("hub listener failed", extra={"runId": run_id})
        return ev

    def publish_many(self, run_id: str, items: Iterable[tuple[Mapping[str, Any], bytes]]) -> None:
        """Refill history (recovery from `events.log`): seq'd events, in order."""
        for event, data in items:
            self.publish(run_id, event, data)

    # -- subscribing --------------------------------------------------------------------------------
    def subscribe(
        self,
        run_id: str,
        since: tuple[str, int] | None,
        nodes: Iterable[str] | None = None,
        *,
        compact: bool = False,
        classes: Iterable[str] | None = None,
    ) -> Subscription:
        """A new subscription after cursor `since` (None: from seq 1), with the resume rules above;
        `compact`: its `run_update`s in compact form (`stream_hub.compact`); `classes`: only those
        classes in every `byClass` it receives (`engine_live.subscribe_options`)."""
        run = self._run(run_id)
        history = run.history
        if since is None:
            after = 0
            recovered = history.epoch is None or history.covers(history.epoch, 0)
        else:
            after = since[1]
            recovered = history.covers(since[0], since[1])
        sub = Subscription(
            run_id,
            history,
            nodes=frozenset(nodes) if nodes is not None else None,
            recovered=recovered,
            replay_after=after,
            max_queue=self.limits.client_queue,
            counters=self._counters,
            detach=self.unsubscribe,
            encodings=self.encodings,
            compact=compact,
            classes=frozenset(classes) if classes is not None else None,
        )
        if run.closed is not None:
            sub.close(*run.closed)
        else:
            run.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription (idempotent)."""
        run = self._runs.get(sub.run_id)
        if run is not None:
            run.subscribers.discard(sub)

    def can_resume(self, run_id: str, epoch: str, seq: int) -> bool:
        """Whether a client holding (epoch, seq) can continue from history (a snapshot still usable)."""
        run = self._runs.get(run_id)
        return run is not None and run.history.covers(epoch, seq)

    # -- history and stats --------------------------------------------------------------------------
    def read_after(self, run_id: str, epoch: str, seq: int, limit: int) -> HistoryRead:
        """Seq'd events after (epoch, seq) still in history (the Kafka sink's catch-up path)."""
        return self._run(run_id).history.read_after(epoch, seq, limit)

    def stats(self) -> HubStats:
        """Counters over every run and subscriber."""
        runs = self._runs.values()
        subs = [s for r in runs for s in r.subscribers]
        c = self._counters
        gate, encodings = self.connections.stats(), self.encodings.stats()
        return HubStats(
            runs=len(self._runs),
            clients=len(subs),
            published=self._published,
            coalesced=c.coalesced,
            dropped=c.dropped,
            resyncs=c.resyncs,
            slow_closes=c.slow_closes,
            history_events=sum(len(r.history) for r in runs),
            history_bytes=sum(r.history.size_bytes for r in runs),
            queue_depth_max=max((s.depth for s in subs), default=0),
            connections=gate.open,
            connections_refused=gate.refused,
            encoding_cache_bytes=encodings.bytes,
            encoding_cache_evictions=encodings.evictions,
            snapshot_cache_bytes=self.snapshots.stats().bytes,
            snapshot_builds=self.snapshots.builds,
        )
