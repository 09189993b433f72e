"""A `RunLookup` for stream tests that serve one run, `r1`, at epoch `e1` (subclass it for the
snapshot body)."""

from __future__ import annotations

from typing import Any

RUN = "r1"


class OneRunLookup:
    """Knows run `r1` only; its current seq is `self.seq`."""

    def __init__(self, hub: Any) -> None:
        self.hub, self.seq = hub, 0

    def exists(self, run_id: str) -> bool:
        return run_id == RUN

    def current(self, run_id: str) -> tuple[str, int]:
        return "e1", self.seq

    def progress(self, run_id: str) -> tuple[int | None, int]:
        return self.seq, 0
