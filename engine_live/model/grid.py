"""The time grid: bins of equal size from an optional UTC start."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

UNIT_MINUTES = {"minutes": 1, "hours": 60, "days": 1440, "weeks": 10080}
MAX_BINS = 1_000_000
END_OF_TIME = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
"""The last minute a bin may end at: Python's datetimes (and RFC 3339) stop at the year 9999."""


def parse_utc(text: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp (`Z` or `+00:00`). Raises ValueError otherwise."""
    if text.endswith("Z"):
        body = text[:-1]
    elif text.endswith("+00:00"):
        body = text[:-6]
    else:
        raise ValueError(f"timestamp {text!r} must be UTC and end in 'Z'")
    dt = datetime.fromisoformat(body)
    if dt.tzinfo is not None:
        raise ValueError(f"timestamp {text!r} must be UTC and end in 'Z'")
    return dt.replace(tzinfo=UTC)


def format_utc(dt: datetime) -> str:
    """Format a datetime as an RFC 3339 UTC timestamp to the second, ending in `Z`."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Grid:
    """`bins` is None for an open-ended live run."""

    bins: int | None
    bin_size: int
    bin_unit: str
    start: str | None = None

    @property
    def bin_minutes(self) -> int:
        """Length of one bin in minutes."""
        return self.bin_size * UNIT_MINUTES[self.bin_unit]

    @property
    def bin_ms(self) -> int:
        """Length of one bin in milliseconds."""
        return self.bin_minutes * 60_000

    def start_dt(self) -> datetime | None:
        """The start as a UTC datetime, or None when the grid has no start."""
        return parse_utc(self.start) if self.start is not None else None

    def capacity(self) -> int | None:
        """How many bins fit between the start and the end of the year 9999 (None without a start):
        every bin's start and end must be a timestamp (SPEC §12.1's grid)."""
        start = self.start_dt()
        if start is None:
            return None
        return int((END_OF_TIME - start).total_seconds() // 60) // self.bin_minutes

    def bin_start(self, index: int) -> str | None:
        """The UTC timestamp at which bin `index` starts, or None when the grid has no start."""
        start = self.start_dt()
        if start is None:
            return None
        return format_utc(start + timedelta(minutes=self.bin_minutes * index))

    def bin_of(self, ts: str) -> int:
        """The bin that starts at `ts`; ValueError when `ts` is not a bin start of this grid."""
        start = self.start_dt()
        if start is None:
            raise ValueError("the grid has no start")
        delta = parse_utc(ts) - start
        minutes, rest = divmod(delta.total_seconds(), 60)
        if rest or minutes % self.bin_minutes or minutes < 0:
            raise ValueError(f"{ts} is not a bin start of the grid")
        return int(minutes // self.bin_minutes)

    def with_bins(self, bins: int | None) -> Grid:
        """A copy of this grid with `bins` replaced."""
        return Grid(bins, self.bin_size, self.bin_unit, self.start)

    def to_wire(self) -> dict[str, Any]:
        """The grid as its JSON wire object (`bins`, `binSize`, `binUnit`, and `start` when set)."""
        out: dict[str, Any] = {"bins": self.bins, "binSize": self.bin_size, "binUnit": self.bin_unit}
        if self.start is not None:
            out["start"] = self.start
        return out
