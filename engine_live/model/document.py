"""Model documents: validate parsed model data (SPEC §1) into a frozen `ModelDoc`.

Every problem is collected and reported together; each message names the node and the field,
e.g. `node 'served': expr: unknown function 'MINN' at position 0`. Keys of the upstream FlowTime
schema that this engine does not use yet are accepted with an info warning; any other unknown key
is an error that names it.

This module checks the document level (top keys, grid, outputs, rng) and assembles the result;
`engine_live.model.node_specs` checks the `nodes` list and `engine_live.model.topology_specs`
the `topology` section, both against the vocabulary in `engine_live.model.checking`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine_live.errors import ModelError
from engine_live.model.checking import TOP_HINTS, TOP_KEYS, Problems
from engine_live.model.classes import ClassSpec, check_classes, uses_classes
from engine_live.model.dialect import canonical_grid
from engine_live.model.grid import MAX_BINS, UNIT_MINUTES, Grid, parse_utc
from engine_live.model.node_specs import NodeSpec, check_node
from engine_live.model.outputs import OutputSpec, check_outputs
from engine_live.model.text import parse_model_text
from engine_live.model.topology_specs import ConstraintSpec, EdgeSpec, TopoNodeSpec, check_topology


@dataclass(frozen=True)
class ModelDoc:
    """A validated model document: the checked parts plus the model data as run."""

    grid: Grid
    nodes: tuple[NodeSpec, ...]
    topo_nodes: tuple[TopoNodeSpec, ...]
    edges: tuple[EdgeSpec, ...]
    constraints: tuple[ConstraintSpec, ...]
    outputs: tuple[OutputSpec, ...] | None
    seed: int
    rng: dict[str, Any] | None
    provenance: dict[str, Any] | None
    data: dict[str, Any]  # the model as run, provenance stripped
    base_dir: Path | None
    info: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    classes: ClassSpec | None = None  # SPEC §14; None for a class-less model


def _on_bin_boundary(start: datetime, unit: str, bin_minutes: int) -> bool:
    minutes = start.hour * 60 + start.minute
    aligned = start.second == 0 and start.microsecond == 0
    if unit in ("minutes", "hours"):
        return aligned and minutes % bin_minutes == 0
    return aligned and minutes == 0


def _check_capacity(problems: Problems, grid: Grid) -> None:
    capacity = grid.capacity()
    assert capacity is not None
    if capacity < 1 or (grid.bins is not None and grid.bins > capacity):
        problems.error(
            "grid",
            f"the grid runs past the year 9999: at most {max(capacity, 0)} bins of "
            f"{grid.bin_size} {grid.bin_unit} fit after {grid.start}",
        )


def _check_grid(problems: Problems, raw: Any, *, live: bool) -> Grid:
    if not isinstance(raw, dict):
        problems.error("grid", "missing or not a mapping")
        return Grid(1, 1, "minutes")
    problems.check_keys("grid", raw, {"bins", "binSize", "binUnit", "start", "startTimeUtc"})
    bins = raw.get("bins")
    if bins is None:
        if not live:
            problems.error("grid", "bins: required")
    elif isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
        problems.error("grid", f"bins: must be an integer from 1 to {MAX_BINS}, got {bins!r}")
        bins = 1
    size = raw.get("binSize")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1000:
        problems.error("grid", f"binSize: must be an integer from 1 to 1000, got {size!r}")
        size = 1
    unit = raw.get("binUnit")
    if unit not in UNIT_MINUTES:
        problems.error("grid", f"binUnit: must be one of minutes, hours, days, weeks, got {unit!r}")
        unit = "minutes"
    start = raw.get("start", raw.get("startTimeUtc"))
    grid = Grid(bins, size, unit, None)
    if start is not None:
        if not isinstance(start, str) or not start.endswith("Z"):
            problems.error("grid", f"start: must be an RFC 3339 UTC time ending in 'Z', got {start!r}")
        else:
            try:
                start_time = parse_utc(start)
            except ValueError:
                problems.error("grid", f"start: not a valid time: {start!r}")
            else:
                if not _on_bin_boundary(start_time, unit, grid.bin_minutes):
                    problems.error("grid", f"start: {start} does not lie on a bin boundary")
                else:
                    grid = Grid(bins, size, unit, start)
                    _check_capacity(problems, grid)
    if live and grid.start is None and not problems.errors:
        problems.error("grid", "start: required for a live run")
    return grid


def _check_nodes(problems: Problems, raw: Any) -> list[NodeSpec]:
    raw_nodes = raw or []
    if not isinstance(raw_nodes, list):
        problems.error("model", "nodes: must be a list")
        raw_nodes = []
    seen: set[str] = set()
    return [node for index, entry in enumerate(raw_nodes) if (node := check_node(problems, entry, index, seen))]


def _check_seed(problems: Problems, rng: Any) -> int:
    if rng is None:
        return 0
    if not isinstance(rng, dict) or rng.get("kind", "pcg32") != "pcg32":
        problems.error("rng", "must be {kind: pcg32, seed: <integer>}")
    elif not isinstance(rng.get("seed", 0), int) or isinstance(rng.get("seed"), bool):
        problems.error("rng", f"seed: must be an integer, got {rng.get('seed')!r}")
    else:
        return int(rng.get("seed", 0))
    return 0


def model_error(errors: list[str]) -> ModelError:
    """One ModelError carrying every problem: the message is the error itself, or `N errors: A; B; …`."""
    return ModelError(errors[0] if len(errors) == 1 else f"{len(errors)} errors: " + "; ".join(errors), errors=errors)


def load_model(source: str | dict[str, Any], *, base_dir: Path | None = None, live: bool = False) -> ModelDoc:
    """Validate a model given as text (YAML or JSON) or as already-parsed data."""
    data = parse_model_text(source) if isinstance(source, str) else source
    if not isinstance(data, dict):
        raise ModelError("model must be a mapping with grid and nodes")
    problems = Problems()
    problems.check_keys("model", data, TOP_KEYS | ({"classes", "traffic"} if uses_classes(data) else set()), TOP_HINTS)
    if data.get("schemaVersion", 1) != 1:
        problems.error("model", f"schemaVersion: only 1 is supported, got {data.get('schemaVersion')!r}")
    grid = _check_grid(problems, canonical_grid(problems, data), live=live)
    nodes = _check_nodes(problems, data.get("nodes"))
    topo_nodes, edges, constraints = check_topology(problems, data.get("topology"))
    outputs = check_outputs(problems, data.get("outputs"))
    rng = data.get("rng")
    seed = _check_seed(problems, rng)
    classes = check_classes(problems, data)
    if problems.errors:
        raise model_error(problems.errors)
    run_data = {key: value for key, value in data.items() if key != "provenance"}
    return ModelDoc(
        grid,
        tuple(nodes),
        tuple(topo_nodes),
        tuple(edges),
        tuple(constraints),
        outputs,
        seed,
        rng,
        data.get("provenance"),
        run_data,
        base_dir,
        tuple(problems.info),
        classes,
    )
