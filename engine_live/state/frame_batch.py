"""`FrameBatch`: validated frames as columns — the one representation of ingested values.

A request's frames are validated straight into a batch (`ingestion.frames`), logged as one `cols`
record (`ingestion.log_records`), and applied with `LiveRun.apply`; recovery decodes the same
record back into a batch and applies it the same way. Value i is (bins[i], series[i], values[i]):
a telemetry series id and a finite value, in frame order (the last of two writes to a cell wins).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Values as three columns of equal length: bin, telemetry series id, value."""

    bins: NDArray[np.int64]
    series: Sequence[str]
    values: NDArray[np.float64]
    # frames of the request the values came from (metrics count frames, the 202 answer counts values);
    # None when not known (a batch decoded from the log, built in a test)
    frame_count: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (len(self.bins) == len(self.series) == len(self.values)):
            raise ValueError("a frame batch with columns of different lengths")

    def __len__(self) -> int:
        return len(self.series)

    @classmethod
    def of(
        cls, bins: Sequence[int], series: Sequence[str], values: Sequence[float], *, frame_count: int | None = None
    ) -> FrameBatch:
        """A batch from plain columns."""
        count = len(series)
        return cls(
            np.fromiter(bins, dtype=np.int64, count=len(bins)) if count else np.zeros(0, dtype=np.int64),
            series,
            np.fromiter(values, dtype=np.float64, count=len(values)) if count else np.zeros(0, dtype=np.float64),
            frame_count,
        )

    @classmethod
    def from_frames(cls, frames: Iterable[tuple[int, str, float]]) -> FrameBatch:
        """A batch from (bin, series, value) triples (tests, bundle replay)."""
        triples = list(frames)
        if not triples:
            return cls.of([], [], [])
        bins, series, values = zip(*triples, strict=True)
        return cls.of(bins, list(series), values)

    @property
    def one_bin(self) -> int | None:
        """The bin every value has, when they share one (the log record then stores it once)."""
        if len(self.bins) == 0:
            return None
        first = int(self.bins[0])
        return first if bool((self.bins == first).all()) else None

    def frames(self) -> list[tuple[int, str, float]]:
        """The values as (bin, series, value) triples, in order."""
        return list(zip(self.bins.tolist(), self.series, self.values.tolist(), strict=True))
