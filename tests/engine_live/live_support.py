"""Shared helpers for the live-run tests: a run that slides its matrix as often as it can, and
records drawn for it."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from hypothesis import strategies as st

from engine_live.state.frame_batch import FrameBatch
from engine_live.state.live_run import ApplyResult, LiveRun


class TinyRun(LiveRun):
    """Slides and grows its matrix as often as possible."""

    MIN_SLACK = 1
    INITIAL_COLUMNS = 1


def draw_records(
    data: st.DataObject, bins: int, tele: tuple[str, ...], values: st.SearchStrategy[float]
) -> list[list[Frame]]:
    """Random frames for bins [0, bins) of the telemetry series, cut into log records."""
    frames = data.draw(
        st.lists(st.tuples(st.integers(0, bins - 1), st.sampled_from(tele), values), max_size=60), "frames"
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(frames)), max_size=12), "cuts"))
    return [frames[a:b] for a, b in itertools.pairwise([0, *cuts, len(frames)])]


Frame = tuple[int, str, float]  # (bin, telemetry series, value)


def apply_frames(run: LiveRun, frames: Iterable[Frame]) -> ApplyResult:
    """Apply (bin, series, value) triples as one record (`LiveRun.apply` of a `FrameBatch`)."""
    return run.apply(FrameBatch.from_frames(frames))
