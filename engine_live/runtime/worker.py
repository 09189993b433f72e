"""The per-run worker: accepted requests → one group-committed log write → apply in log order.

Per run, one task drains a queue of accepted requests: it appends their records to the run's
ingestion log (the appends of a batch share one fsync), then applies them in log order
(`Applier`) and answers each request. A request is answered only after its record is durable, so
no event is ever published for data a crash could lose. After each batch the run's checkpoint
may capture a snapshot (`Checkpoints.after_batch`).

Failures never leave a request unanswered nor a run wedged:

- a record whose append fails (ENOSPC, EIO, a failing fsync) is answered 503
  `storage_unavailable`, is not applied, and is reported to `StorageHealth`; the log cut the failed
  bytes, so the next request appends as if nothing happened;
- a record refused when applied (`IngestError`, `ModelError`: checks made before anything changes)
  is answered with that error;
- a record that fails to evaluate (any other exception) is answered 409 `run_failed` and the run
  becomes `failed` (`RunFailures`), with a `FailRecord` logged behind it (best effort);
- `stop` (and `refuse_queued`) answer whatever is still queued or in flight with the given error.

`IngestQueue` counts the values queued across all runs (bounded: ingest answers 429 when full)
and tells waiting producers (the Kafka source) when there is room again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine_live.errors import FlowTimeError, IngestError, ModelError, StorageUnavailableError
from engine_live.runtime.apply import Applier
from engine_live.runtime.checkpoints import Checkpoints
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.failures import failure_reason
from engine_live.runtime.handle import QueuedRecord, RunHandle
from engine_live.runtime.records import FailRecord

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
        pending = [item.future for item in (*h.work.inflight, *h.work.queue)]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    async def settle(h: RunHandle) -> None:
        """Wait for the batch being written and applied (what is still queued is not waited for)."""
        pending = [item.future for item in h.work.inflight]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def release(self, item: QueuedRecord) -> None:
        """The request's values leave the ingest queue (once)."""
        self.queue.release(item.values)
        item.values = 0

    def refuse_queued(self, h: RunHandle, error: FlowTimeError) -> None:
        """Answer every request still waiting for the log with `error` (nothing of them is written)."""
        queued, h.work.queue = list(h.work.queue), type(h.work.queue)()
        for item in queued:
            self.release(item)
            if not item.future.done():
                item.future.set_exception(error)

    async def stop(self, h: RunHandle, leftover: FlowTimeError | None = None) -> None:
        """Cancel the run's worker task and wait for it; requests it leaves get `leftover` (or 503)."""
        task = h.work.task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        error = leftover or StorageUnavailableError("the service is stopping; retry", runId=h.run_id)
        for item in h.work.inflight:
            self.release(item)
            if not item.future.done():
                item.future.set_exception(error)
        h.work.inflight = []
        self.refuse_queued(h, error)

    async def _work(self, h: RunHandle) -> None:
        work = h.work
        while True:
            await work.wake.wait()
            work.wake.clear()
            while work.queue:
                batch = work.inflight = list(work.queue)
                work.queue.clear()
                try:
                    await self._write_and_apply(h, batch)
                except Exception as exc:  # a bug of the worker itself: fail the run, leave nothing hanging
                    self.applier.failures.fail(h, failure_reason("worker_failed", exc), "evaluation", exc)
                    self.refuse_queued(h, self.applier.failures.refusal(h))
                    for item in batch:
                        self.release(item)
                        if not item.future.done():
                            item.future.set_exception(self.applier.failures.refusal(h))
                work.inflight = []
                await self.checkpoints.after_batch(h)
            await self.checkpoints.after_batch(h)  # a requested snapshot while idle

    async def _write_and_apply(self, h: RunHandle, batch: list[QueuedRecord]) -> None:
        log_ = h.files.log
        assert log_ is not None
        results = await asyncio.gather(*(log_.append(item.payload) for item in batch), return_exceptions=True)
        for item, result in zip(batch, results, strict=True):
            self.release(item)
            if isinstance(result, BaseException):
                self._refuse_unwritten(h, item, result)
                continue
            self.ctx.storage.succeeded("log")
            await self._apply(h, item, result)
            h.durable.applied_offset = self.ctx.logs.record_end(result, item.payload)

    def _refuse_unwritten(self, h: RunHandle, item: QueuedRecord, exc: BaseException) -> None:
        """The record did not become durable: 503, not applied, storage reported failing."""
        first = self.ctx.storage.failed("log", exc)
        if not isinstance(exc, OSError):
            log.error("run %s: log append failed", h.run_id, exc_info=exc, extra={"run_id": h.run_id})
        elif first:
            log.warning("run %s: ingestion log write failed: %s", h.run_id, exc, extra={"run_id": h.run_id})
        item.future.set_exception(
            StorageUnavailableError(f"ingestion log write failed: {exc}; nothing was applied", runId=h.run_id)
        )

    async def _apply(self, h: RunHandle, item: QueuedRecord, offset: int) -> None:
        try:
            result = await self.applier.apply(h, item.record, offset, prepared=item.prepared, accepted=item.accepted)
        except (IngestError, ModelError) as exc:  # refused by checks made before anything changed
            item.future.set_exception(exc)
        except Exception as exc:  # the record fails to evaluate: the run cannot go on
            self.applier.failures.fail(h, failure_reason("evaluation_failed", exc), "evaluation", exc)
            item.future.set_exception(self.applier.failures.refusal(h))
            await self._log_failure(h)
            self.refuse_queued(h, self.applier.failures.refusal(h))
        else:
            item.future.set_result(result)

    async def _log_failure(self, h: RunHandle) -> None:
        """Append the run's `FailRecord`, so that a restart keeps it failed (best effort)."""
        log_ = h.files.log
        if log_ is None or h.reason is None:
            return
        payload = self.ctx.logs.encode(FailRecord(h.reason))
        try:
            offset = await log_.append(payload)
        except Exception as exc:
            log.warning("run %s: the failure could not be logged: %s", h.run_id, exc, extra={"run_id": h.run_id})
        else:
            h.durable.applied_offset = self.ctx.logs.record_end(offset, payload)
