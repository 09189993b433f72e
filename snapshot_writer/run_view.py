"""A finished run folder as capture and export read it (SPEC §4, §14): series by model id, classes.

Series are keyed by model series id (`engine_live.plan.run_result.model_series_id`): the total of a
series is `<id>`, its class rows (artifacts `<id>@<ID>@<classId>`) are `<id>@<classId>`.
`RunView.classes` names the class ids of each class-bearing total, in the run's artifact order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from engine_live.errors import NotFoundError
from engine_live.model.grid import Grid
from engine_live.plan.run_result import model_series_id
from snapshot_writer.artifact_reader import is_complete, read_run_json, read_run_series

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RunView:
    """What capture and export need of a finished run folder (no model compile)."""

    run_dir: Path
    run_json: dict[str, Any]
    manifest_bytes: bytes
    grid: Grid
    topology: tuple[dict[str, Any], ...]  # topology.json nodes: {id, kind, semantics{field: series}}
    series: dict[str, FloatArray]  # model series id → values (class rows as `<id>@<classId>`)
    units: dict[str, str]  # model series id → unit
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # total id → its class ids

    @property
    def bins(self) -> int:
        """The run's number of bins."""
        return self.grid.bins or 0

    @property
    def class_ids(self) -> tuple[str, ...]:
        """Every class id of the run, in first-seen artifact order (empty for a class-less run)."""
        return tuple(dict.fromkeys(c for ids in self.classes.values() for c in ids))

    @property
    def class_rows(self) -> frozenset[str]:
        """The model ids of every class row (`<id>@<classId>`)."""
        return frozenset(f"{sid}@{c}" for sid, ids in self.classes.items() for c in ids)

    def bindings(self, metrics: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
        """(nodeId, field, series id) of every topology field whose series the run holds, in
        topology order; fields in `metrics` order when given (only those), else as written."""
        out = []
        for node in self.topology:
            fields: dict[str, Any] = node.get("semantics") or {}
            for name in metrics if metrics is not None else list(fields):
                sid = fields.get(name)
                if isinstance(sid, str) and sid in self.series:
                    out.append((str(node["id"]), name, sid))
        return out


def _classes_of(artifact_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Total model id → class ids, from artifact ids `<id>@<ID>@<classId>` (classId ≠ DEFAULT)."""
    found: dict[str, list[str]] = {}
    for artifact in artifact_ids:
        sid = model_series_id(artifact)
        if "@" in sid:
            total, class_id = sid.rsplit("@", 1)
            found.setdefault(total, []).append(class_id)
    return {total: tuple(ids) for total, ids in found.items()}


def read_run_view(run_dir: Path) -> RunView:
    """Read a complete run folder; NotFoundError when it has no complete artifact set."""
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise NotFoundError(f"run folder {run_dir.name!r} has no complete artifact set", runId=run_dir.name)
    manifest_bytes = (run_dir / "manifest.json").read_bytes()
    run_json = read_run_json(run_dir)
    g = run_json.get("grid") or {}
    n = int(g.get("bins") or 0)
    grid = Grid(n, int(g.get("binSize", 1)), str(g.get("binUnit", "minutes")), g.get("start"))
    raw = read_run_series(run_dir)
    series = {model_series_id(k): v for k, v in raw.items()}
    for sid, values in series.items():
        if values.size != n:
            fixed = np.zeros(n)
            fixed[: min(n, values.size)] = values[:n]
            series[sid] = fixed
    units = {model_series_id(str(s["id"])): str(s.get("unit") or "") for s in run_json.get("series") or ()}
    topo_path = run_dir / "topology.json"
    topo = orjson.loads(topo_path.read_bytes()) if topo_path.is_file() else {}
    nodes = tuple(n for n in (topo.get("nodes") or ()) if isinstance(n, dict) and "id" in n)
    classes = {total: ids for total, ids in _classes_of(raw).items() if total in series}
    return RunView(run_dir, run_json, manifest_bytes, grid, nodes, series, units, classes)
