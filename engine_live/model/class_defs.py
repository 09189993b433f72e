"""Primitive definitions of per-class series (SPEC §14), produced by `engine_live.model.class_expand`.

A class-bearing series `X` gets one row per declared class, `X@<classId>`, whose values sum to `X`
in every bin. They are ordinary rows of the run matrix, computed by stages placed after the rows
they read, so batch, bin-by-bin and recovered runs give the same bits for them as for totals.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine_live.expressions.syntax import Expr

CLASS_SEP = "@"
INPUT_SUFFIX = ":in"
MISMATCH_SUFFIX = "@:mismatch"


def class_row(series_id: str, class_id: str) -> str:
    """The row id of one class of a series: `<series>@<classId>`."""
    return f"{series_id}{CLASS_SEP}{class_id}"


@dataclass(frozen=True)
class ClassSplitDef:
    """`X@c = X · raw_c / Σ raw` per bin; when Σ raw ≤ 0 (or is not finite) the proportions of
    `fallback` (the first class-bearing term), else the model's class mix `mix`."""

    id: str  # definition id: `<total>@` (never a series)
    total: str
    classes: tuple[str, ...]
    raw: tuple[Expr, ...]  # one per class, over total and class rows
    fallback: tuple[Expr, ...] | None
    mix: tuple[float, ...]

    kind = "class"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The per-class rows of `total`."""
        return tuple(class_row(self.total, class_id) for class_id in self.classes)


@dataclass(frozen=True)
class ClassQueueDef:
    """Per-class depth, outflow and overflow of a queue: the content available in a bin
    (`Q_c[t-1] + in_c[t]`) gives the shares of Q[t], the outflow and the overflow (SPEC §14)."""

    id: str  # `<queue>@`
    queue: str
    outflow_id: str
    overflow_id: str
    initial: float
    classes: tuple[str, ...]
    inflows: tuple[str, ...]  # class-bearing inflow series (main inflow, overflow sources)
    mix: tuple[float, ...]

    kind = "class"

    @property
    def outputs(self) -> tuple[str, ...]:
        """Depth, outflow and overflow rows, each per class."""
        return tuple(
            class_row(series, class_id)
            for series in (self.queue, self.outflow_id, self.overflow_id)
            for class_id in self.classes
        )


def class_input(series_id: str, class_id: str) -> str:
    """The telemetry row that holds the values sent for one class of a telemetry-fed source."""
    return f"{class_row(series_id, class_id)}{INPUT_SUFFIX}"


@dataclass(frozen=True)
class ClassInput:
    """A telemetry-fed class source `source` (SPEC §14): frames with `classId` write `inputs` (one
    telemetry row per class, hidden); the run derives the total from them when no total was sent,
    and `mismatch` (a hidden row) holds total − Σ classes where both were sent and differ."""

    source: str
    inputs: tuple[str, ...]  # one per declared class, in order
    mismatch: str

    @property
    def rows(self) -> tuple[str, ...]:
        """Every hidden row of this source."""
        return (*self.inputs, self.mismatch)
