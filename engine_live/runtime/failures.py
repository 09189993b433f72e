"""When a live run cannot go on: it becomes `failed` with a reason (SPEC §10, §12.9).

Validation is the first line of defence: a frame or PATCH is checked against the model before it
is logged. `RunFailures` is the second: a record that is logged and still fails to evaluate (an
exception from the evaluator, not a refusal like `bin_outside_retention`) is never acknowledged,
and the run does not stay half-applied or wedged — it becomes `failed`:

- `status: failed` with `reason` in the API (`RunHandle.reason`, shown by run detail and list),
  a `status` event to subscribers (not seq'd: a failure is not a function of the log; it repeats
  the current seq), WebSocket clients closed with 1000, `flowtime_run_failures_total{cause}`;
- new requests answer 409 `run_closed`; close is a no-op; DELETE works as for any run;
- a `FailRecord` is appended to the log (best effort) so a restart keeps the run failed instead of
  replaying past the record; a record that fails again on replay fails the run there (recovery
  goes on with the other runs).

Causes: `evaluation` (a record failed live), `recovery` (a record failed on replay), `artifacts`
(a close whose artifacts cannot be built, e.g. a damaged segment; a *storage* failure instead
keeps the run `closing` and retries).
"""

from __future__ import annotations

import logging
from collections import Counter

from engine_live.errors import RunClosedError
from engine_live.protocol import RunStatus, encode_event
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.handle import RunHandle

log = logging.getLogger("flowtime.live")
CAUSES = ("evaluation", "recovery", "artifacts")


class RunFailures:
    """Moves runs to `failed` and counts why (see the module docstring)."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self.counts: Counter[str] = Counter({cause: 0 for cause in CAUSES})

    def fail(self, h: RunHandle, reason: str, cause: str | None, exc: BaseException | None = None) -> None:
        """The run is `failed` with `reason` (no-op for a completed or failed run); `cause` None: not
        counted (a failure read back from the log)."""
        run = h.run
        if run.status.is_terminal:
            return
        h.reason = reason
        h.work.closing = True
        h.work.close_retry_at = None
        event = run.set_status(RunStatus.FAILED, reason, seqd=False)
        self.ctx.sink.publish(h.run_id, event, encode_event(event), seqd=False)
        self.ctx.sink.close_run(h.run_id, 1000)
        if cause is not None:
            self.counts[cause] += 1
            log.error("run %s failed: %s", h.run_id, reason, exc_info=exc, extra={"run_id": h.run_id})

    @staticmethod
    def refusal(h: RunHandle) -> RunClosedError:
        """What a request for a run that failed under it is answered (409 `run_failed`)."""
        return RunClosedError(
            f"run '{h.run_id}' failed: {h.reason}", code="run_failed", runId=h.run_id, reason=h.reason
        )


def failure_reason(prefix: str, exc: BaseException) -> str:
    """`<prefix>: <ExceptionType>: <message>` (bounded)."""
    return f"{prefix}: {type(exc).__name__}: {exc}"[:500]


__all__ = ["CAUSES", "RunFailures", "failure_reason"]
