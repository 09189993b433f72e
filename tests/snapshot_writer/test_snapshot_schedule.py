"""Time-based snapshots are staggered per run (`RunCheckpoint`): runs created together do not all
snapshot in the same second; none snapshots sooner than `every_seconds`; later snapshots follow
every `every_seconds` after the previous capture."""

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


def first_due(cp: RunCheckpoint, clock: Clock, captured: bool = False) -> float:
    """Seconds after the mark (or a capture: `captured`) until a snapshot is due (stepping 0.1 s)."""
    start = clock.now
    cp.mark(0, 0)
    if captured:
        cp._wait = cp.every_seconds  # what `run_due` does after its capture
    while not cp.due(run(), applied_offset=1):
        clock.now += 0.1
    return clock.now - start


def test_runs_created_together_snapshot_at_different_times(tmp_path: Path) -> None:
    clock = Clock()
    firsts = []
    for i in range(20):
        clock.now = 1000.0
        firsts.append(round(first_due(checkpoint(tmp_path, f"run-{i}", clock), clock), 1))
    assert all(30.0 - 1e-9 <= first <= 60.0 + 0.1 for first in firsts)  # never sooner than before
    assert len(set(firsts)) >= 15  # spread over 30 s, not all at +30 s
    assert max(firsts) - min(firsts) > 15


def test_after_a_capture_snapshots_follow_every_every_seconds(tmp_path: Path) -> None:
    clock = Clock()
    cp = checkpoint(tmp_path, "r1", clock)
    first_due(cp, clock)
    gaps = [first_due(cp, clock, captured=True) for _ in range(5)]
    assert all(abs(gap - 30.0) < 0.11 for gap in gaps), gaps
    cp.mark(7, 0)
    clock.now += 60
    assert not cp.due(run(), applied_offset=7)  # a new slot, but the log did not move: not due
