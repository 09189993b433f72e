"""How one stream session gets the snapshot of its run (SPEC §7): shared, built off the loop, aligned.

`SnapshotSource.take(sub)` answers a subscriber that history cannot serve (and a resync): the hub's
shared snapshot of the run for `max_age_s` after it was built, as long as history holds every event
after it, else a new one (`stream_hub.snapshots.SnapshotCache`: one build per run at a time, in the
snapshot thread). The subscription is aligned with the snapshot with no await in between. A build
therefore runs at most once per `max_age_s` + its own duration per run, however many clients come.

A build captures the state on the loop — `StateCapture.capture_state` (copies of what the body
needs) when the `RunLookup` offers it, else the whole `snapshot_state` body — and builds and encodes
it in the snapshot thread, in the form the endpoint sends (text or binary).

A subscriber with a `classes` filter gets the shared snapshot with every `byClass` trimmed to its
classes (`engine_live.subscribe_options.trim_state`): made from the shared one in the snapshot
thread, once per (snapshot, filter) (`SnapshotCache.derived`); a snapshot without any `byClass` is
sent as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from engine_live.protocol import encode_event, snapshot_message
from engine_live.subscribe_options import trim_state
from stream_hub.hub import Hub
from stream_hub.ports import Clock, RunLookup, StateCapture
from stream_hub.snapshots import Snapshot
from stream_hub.subscription import Subscription

__all__ = ["SnapshotSource"]


@dataclass(frozen=True, slots=True)
class SnapshotSource:
    """Snapshots of one run for one session."""

    hub: Hub
    runs: RunLookup
    run_id: str
    clock: Clock
    max_age_s: float
    text_frames: bool

    def usable(self, snap: Snapshot) -> bool:
        """Young enough, and history holds every event after it (same epoch)."""
        fresh = self.clock.monotonic() - snap.built_at <= self.max_age_s
        return fresh and self.hub.can_resume(self.run_id, snap.epoch, snap.seq)

    async def take(self, sub: Subscription) -> Snapshot:
        """A snapshot for `sub`, with `sub` aligned to it (events after an older one replay from history)."""
        for _ in range(2):  # a build can be overtaken by a new epoch: then once more
            snap = await self.hub.snapshots.get(self.run_id, self.usable, self.build)
            if self.hub.can_resume(self.run_id, snap.epoch, snap.seq):
                sub.resume_after_snapshot(snap.epoch, snap.seq)
                return snap if sub.classes is None else await self.for_classes(snap, sub.classes)
        # the epoch keeps changing under the builds: read and align on the loop, as one step
        state = self.runs.snapshot_state(self.run_id)
        snap = self.encode(
            state if sub.classes is None else trim_state(state, sub.classes), *self.runs.current(self.run_id)
        )
        sub.resume_after_snapshot(snap.epoch, snap.seq)
        return snap

    async def for_classes(self, snap: Snapshot, classes: frozenset[str]) -> Snapshot:
        """`snap` with every `byClass` trimmed to `classes` (`snap` itself when it holds none), made
        in the snapshot thread once per (snapshot, filter). The subscription is already aligned with
        `snap`: what it queues meanwhile follows the snapshot, as after any other await."""
        frame = snap.frame
        if not (b'"byClass"' in frame if isinstance(frame, bytes) else '"byClass"' in frame):
            return snap

        def trim() -> Snapshot:
            message = orjson.loads(frame)
            message["state"] = trim_state(message.get("state") or {}, classes)
            data = encode_event(message)
            return Snapshot(snap.epoch, snap.seq, data.decode() if self.text_frames else data, snap.built_at)

        async def build() -> Snapshot:
            return await self.hub.snapshots.in_thread(trim)

        return await self.hub.snapshots.derived((self.run_id, snap.epoch, snap.seq, snap.built_at, classes), build)

    async def build(self) -> Snapshot:
        """Capture on the loop, then build the body and encode it in the snapshot thread."""
        epoch, seq = self.runs.current(self.run_id)
        if isinstance(self.runs, StateCapture):
            make = self.runs.capture_state(self.run_id)
        else:
            state = self.runs.snapshot_state(self.run_id)

            def make() -> dict[str, Any]:
                return state

        snap = await self.hub.snapshots.in_thread(lambda: self.encode(make(), epoch, seq))
        return dataclasses.replace(snap, built_at=self.clock.monotonic())  # its age counts from now

    def encode(self, state: dict[str, Any], epoch: str, seq: int) -> Snapshot:
        """The snapshot message of `state` (its own epoch and seq win over the ones given)."""
        epoch, seq = str(state.get("epoch", epoch)), int(state.get("seq", seq))
        data = encode_event(snapshot_message(epoch, seq, state))
        return Snapshot(epoch, seq, data.decode() if self.text_frames else data, 0.0)
