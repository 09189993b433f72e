"""What a telemetry bundle holds (SPEC §5), shared by its reader (`ingestion`) and writer (`snapshot_writer`):
the Gold metrics a series may carry, and the shape of a warning about a bundle."""

from __future__ import annotations

from typing import Any

METRICS = (
    "arrivals",
    "served",
    "errors",
    "externalDemand",
    "queueDepth",
    "capacity",
    "attempts",
    "failures",
    "processingTimeMsSum",
    "servedCount",
)


def warning(
    code: str,
    message: str,
    *,
    node: str | None = None,
    severity: str = "warning",
    bins: list[int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A warning dict (`code`, `severity`, `nodeId`, `message`; `bins` capped at 5 with `count`)."""
    out: dict[str, Any] = {"code": code, "severity": severity, "nodeId": node, "message": message}
    if bins is not None:
        out.update(bins=bins[:5], count=len(bins))
    return {**out, **extra}
