"""Shared helpers for the live-run tests: a run that slides its matrix as often as it can, and
records drawn for it."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from engine_live.state.live_run import LiveRun, ValidFrame


class TinyRun(LiveRun):
    """Slides and grows its matrix as often as possible."""

    MIN_SLACK = 1
    INITIAL_COLUMNS = 1


def draw_records(
    data: st.DataObject, bins: int, tele: tuple[str, ...], values: st.SearchStrategy[float]
) -> list[list[ValidFrame]]:
    """Random frames for bins [0, bins) of the telemetry series, cut into log records."""
    frames = data.draw(
        st.lists(st.builds(ValidFrame, st.integers(0, bins - 1), st.sampled_from(tele), values), max_size=60), "frames"
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(frames)), max_size=12), "cuts"))
    return [frames[a:b] for a, b in itertools.pairwise([0, *cuts, len(frames)])]
