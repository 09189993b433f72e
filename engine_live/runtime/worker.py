"""The per-run worker: accepted requests → one group-committed log write → apply in log order.

Per run, one task drains a queue of accepted requests: it appends their records to the run's
ingestion log (the appends of a batch share one fsync), then applies them in log order
(`Applier`) and answers each request. A request is answered only after its record is durable, so
no event is ever published for data a crash could lose. After each batch the run's checkpoint
may capture a snapshot (`Checkpoints.after_batch`).

`IngestQueue` counts the values queued across all runs (bounded: ingest answers 503 when full)
and tells waiting producers (the Kafka source) when there is room again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine_live.errors import FlowTimeError, StorageUnavailableError
from engine_live.runtime.apply import Applier
from engine_live.runtime.checkpoints import Checkpoints
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.handle import QueuedRecord, RunHandle

log = logging.getLogger("flowtime.live")


class IngestQueue:
    """Values accepted but not yet logged, across all runs; bounded by `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.depth = 0
        self.drained = asyncio.Event()  # set whenever there is room again

    @property
    def full(self) -> bool:
        """No room for another value."""
        return self.depth >= self.capacity

    def take(self, values: int) -> None:
        """`values` were queued."""
        self.depth += values

    def release(self, values: int) -> None:
        """`values` left the queue (logged, or failed)."""
        self.depth -= values
        if self.depth < self.capacity:
            self.drained.set()

    async def wait_for_room(self) -> None:
        """Return once the queue has room (producers that can wait, e.g. the Kafka source)."""
        while self.full:
            self.drained.clear()
            await self.drained.wait()


class RunWorker:
    """Runs the worker task of each live run (see the module docstring)."""

    def __init__(self, ctx: RuntimeContext, queue: IngestQueue, applier: Applier, checkpoints: Checkpoints) -> None:
        self.ctx, self.queue, self.applier, self.checkpoints = ctx, queue, applier, checkpoints

    def start(self, h: RunHandle) -> None:
        """Start the run's worker task (open runs only)."""
        if h.run.status.is_open:
            h.work.task = asyncio.create_task(self._work(h), name=f"run-worker-{h.run_id}")

    async def submit(self, h: RunHandle, item: QueuedRecord) -> dict[str, Any]:
        """Queue an accepted request; its answer once it is logged and applied."""
        self.queue.take(item.values)
        h.work.queue.append(item)
        h.work.wake.set()
        return await item.future

    @staticmethod
    async def drain(h: RunHandle) -> None:
        """Wait until every request queued for the run has been logged and applied (or failed)."""
        pending = [item.future for item in h.work.queue]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self, h: RunHandle) -> None:
        """Cancel the run's worker task and wait for it."""
        task = h.work.task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _work(self, h: RunHandle) -> None:
        log_ = h.files.log
        assert log_ is not None
        work = h.work
        while True:
            await work.wake.wait()
            work.wake.clear()
            while work.queue:
                batch = list(work.queue)
                work.queue.clear()
                try:
                    offsets = await asyncio.gather(*(log_.append(item.payload) for item in batch))
                except OSError as exc:
                    for item in batch:
                        self.queue.release(item.values)
                        item.future.set_exception(
                            StorageUnavailableError(f"ingestion log write failed: {exc}", runId=h.run_id)
                        )
                    continue
                for item, offset in zip(batch, offsets, strict=True):
                    self.queue.release(item.values)
                    await self._apply(h, item, offset)
                    h.durable.applied_offset = self.ctx.logs.record_end(offset, item.payload)
                await self.checkpoints.after_batch(h)
            await self.checkpoints.after_batch(h)  # a requested snapshot while idle

    async def _apply(self, h: RunHandle, item: QueuedRecord, offset: int) -> None:
        try:
            result = await self.applier.apply(h, item.record, offset, prepared=item.prepared, accepted=item.accepted)
        except FlowTimeError as exc:
            item.future.set_exception(exc)
        except Exception as exc:
            log.exception("run %s: applying the record at %d failed", h.run_id, offset, extra={"run_id": h.run_id})
            item.future.set_exception(FlowTimeError(f"internal error: {type(exc).__name__}", code="internal"))
        else:
            item.future.set_result(result)
