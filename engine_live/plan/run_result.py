"""What a finished (or checkpointed) run hands to the artifact writer. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine_live.model.grid import Grid


@dataclass(frozen=True)
class SeriesOut:
    """One output series. `node_id` is the model series id (e.g. `served`, `queue_a_outflow`);
    the artifact series id is `<node_id>@<NODE_ID UPPER>@DEFAULT`."""

    node_id: str
    values: np.ndarray  # float64, length == grid.bins
    kind: str  # const | expr | pmf | queue | router | telemetry | derived ...
    unit: str = "entities/bin"
    component_id: str | None = None  # topology node id this series belongs to, if any
    class_id: str = "DEFAULT"
    path_name: str | None = None  # output file name from `outputs[].as`, if set

    @property
    def series_id(self) -> str:
        """The artifact series id, `<node_id>@<NODE_ID UPPER>@<classId>` (`DEFAULT` for a total)."""
        return f"{self.node_id}@{self.node_id.upper()}@{self.class_id}"


def model_series_id(artifact_id: str) -> str:
    """The model series id of an artifact series id — `SeriesOut.series_id` read back:
    `<id>@<ID>@DEFAULT` → `<id>` (a total), `<id>@<ID>@<classId>` → `<id>@<classId>` (the class row)."""
    parts = artifact_id.split("@")
    if len(parts) == 3 and parts[2] != "DEFAULT":
        return f"{parts[0]}@{parts[2]}"
    return parts[0]


@dataclass(frozen=True)
class RunResult:
    """Everything the artifact writer needs about one run: grid, model text, series, warnings and provenance."""

    run_id: str
    mode: str  # simulation | telemetry | overlay | live
    status: str  # completed | live | ...
    grid: Grid  # bins is always set here
    spec_text: str  # the model as run, provenance stripped (spec.yaml and model/model.yaml)
    seed: int
    rng: dict[str, Any] | None
    series: list[SeriesOut]
    warnings: list[dict[str, Any]]
    created_utc: str
    topology: dict[str, Any]  # {"nodes": [...], "edges": [...]} for a graph view
    provenance: dict[str, Any] | None = None  # the model's provenance block, if any
    template_id: str | None = None
    live: dict[str, Any] | None = None  # {epoch, seq, lastBin, watermark, revision} for live runs
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # PATCH records (§12.8)
    capture_manifest_hash: str | None = None
    live_session: str | None = None
