"""Time-based snapshots fall on a per-run schedule (`RunCheckpoint`): runs created together do not
all snapshot in the same second, and a snapshot is never more than `every_seconds` after the last."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from snapshot_writer.live_checkpoint import RunCheckpoint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def checkpoint(tmp_path: Path, run_id: str, clock: Clock) -> RunCheckpoint:
    return RunCheckpoint(tmp_path / "runs" / run_id / "live", every_bins=10**9, every_seconds=30.0, clock=clock)


def run() -> Any:
    return SimpleNamespace(status=SimpleNamespace(is_open=True), last_bin=0)


def first_due(cp: RunCheckpoint, clock: Clock) -> float:
    """Seconds after the mark until the time schedule says due (stepping 0.1 s)."""
    start = clock.now
    cp.mark(0, 0)
    while not cp.due(run(), applied_offset=1):
        clock.now += 0.1
    return clock.now - start


def test_runs_created_together_snapshot_at_different_times(tmp_path: Path) -> None:
    clock = Clock()
    firsts = []
    for i in range(20):
        clock.now = 1000.0
        firsts.append(round(first_due(checkpoint(tmp_path, f"run-{i}", clock), clock), 1))
    assert all(0 < first <= 30.0 + 1e-9 for first in firsts)
    assert len(set(firsts)) >= 15  # spread over the 30 s, not all at +30 s
    assert max(firsts) - min(firsts) > 15


def test_after_the_first_the_schedule_repeats_every_every_seconds(tmp_path: Path) -> None:
    clock = Clock()
    cp = checkpoint(tmp_path, "r1", clock)
    first_due(cp, clock)
    gaps = [first_due(cp, clock) for _ in range(5)]
    assert all(abs(gap - 30.0) < 0.11 for gap in gaps), gaps
    cp.mark(7, 0)
    clock.now += 60
    assert not cp.due(run(), applied_offset=7)  # a new slot, but the log did not move: not due
