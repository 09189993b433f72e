"""Ports the stream endpoint needs from the rest of the service, with the system clock.

The API layer adapts the live-run registry to `RunLookup` (and `StateCapture`) and the token store
to `Authenticator`; tests use small in-memory fakes. `Clock` is injected so heartbeats and timeouts
can be driven fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Authenticator", "Clock", "RunLookup", "StateCapture", "SystemClock"]


class RunLookup(Protocol):
    """What the stream endpoint reads about runs (the live-run registry, adapted by the API layer)."""

    def exists(self, run_id: str) -> bool:
        """True for a live run (or a completed one still served from its event log)."""
        ...

    def snapshot_state(self, run_id: str) -> dict[str, Any]:
        """The GET /v1/runs/{id}/state/live body, read atomically; holds `epoch` and `seq`."""
        ...

    def current(self, run_id: str) -> tuple[str, int]:
        """(epoch, seq) of the last seq'd event published for the run."""
        ...

    def progress(self, run_id: str) -> tuple[int | None, int]:
        """(watermark, lagBins) for heartbeats; lagBins = watermark − lastBin."""
        ...


@runtime_checkable
class StateCapture(Protocol):
    """A `RunLookup` that can build the snapshot state off the event loop (the live engine's does)."""

    def capture_state(self, run_id: str) -> Callable[[], dict[str, Any]]:
        """Read what `snapshot_state` needs now, atomically and cheaply (copies); the returned
        function builds the same body from those copies only, so it may run in another thread."""
        ...


class Authenticator(Protocol):
    """Checks a client's token for a scope on a run (the token store, adapted by the API layer)."""

    def check(self, token: str | None, scope: str, run_id: str) -> None:
        """Return when allowed; raise UnauthenticatedError (bad/missing token) or ForbiddenError."""
        ...


class Clock(Protocol):
    """Monotonic time and sleeping, injected so that tests can drive heartbeats and timeouts fast."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (only differences between readings mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...


class SystemClock:
    """The real `Clock`: `time.monotonic` and `asyncio.sleep`."""

    def monotonic(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep with `asyncio.sleep`."""
        await asyncio.sleep(seconds)
