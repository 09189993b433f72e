"""Batch run requests (SPEC §8 `POST /v1/runs`, §12.14): request bodies, model resolution and execution.

A request resolves to a `BatchJob` — model source, base folder for `file:` paths, telemetry arrays,
mode and run id — which `execute` evaluates and writes as §4 artifacts. Everything here is
synchronous and meant to run off the event loop (a worker thread).

Decisions where the spec is silent:
- A template request's model gets `provenance{generator, templateId, parameters}` (the resolved
  values), so manifest.json names the template; a model's own provenance wins.
- An overlay keeps the base's template id in its provenance and records `baseRunId`; the base's
  telemetry-fed series are passed on to the series that are still telemetry-fed in the overlay.
- `topologyOverride` nodes merge per key: mappings (`semantics`, `initialCondition`, ...) per field,
  anything else replaced; an unknown topology node id is a 422.
- Writes into one run folder are serialised (deterministic run ids may repeat).
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from compat_api.run_store import LoadedRun
from engine_live.errors import FlowTimeError, InvalidRequestError, ModelError, TooLargeError
from engine_live.model.build import build_model, load_graph
from engine_live.model.document import load_model
from engine_live.model.text import parse_model_text
from engine_live.plan.batch_run import BatchRun, new_run_id, run_model, scenario_hash, spec_text_of
from engine_live.plan.budget import check_cells
from engine_live.plan.compiler import compile_model
from snapshot_writer.artifact_reader import read_manifest
from snapshot_writer.artifacts import ArtifactsInfo, write_run_artifacts

GENERATOR = "flowtime-live"
_WRITE_LOCKS = tuple(threading.Lock() for _ in range(16))

MODEL_EXAMPLE = (
    'schemaVersion: 1\ngrid: {bins: 4, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}\n'
    "nodes:\n  - {id: arrivals, kind: const, values: [10, 20, 30, 40]}\n"
    "  - {id: capacity, kind: const, values: [25, 25, 25, 25]}\n"
    '  - {id: served, kind: expr, expr: "MIN(arrivals, capacity)"}\n'
    "topology:\n  nodes:\n    - {id: Svc, kind: service, semantics: {arrivals: arrivals, served: served, "
    "capacity: capacity}}\n"
)


PositiveSeconds = Annotated[StrictInt, Field(gt=0)] | Annotated[StrictFloat, Field(gt=0)]


class RunOptions(BaseModel):
    """Options of `POST /v1/runs`; the live-run ones (§12.3) are typed so bad values answer 422, not 500."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    deterministicRunId: bool = Field(False, description="run_deterministic_<8 hex of scenarioHash>")
    run_async: bool = Field(False, alias="async", description="202 + Location, evaluated in the background")
    runId: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="the run id (409 if taken; default: generated)"
    )
    graceBins: StrictInt = Field(2, ge=0, description="live: bins to wait for late series before zero-filling")
    retentionBins: StrictInt | None = Field(None, ge=1, description="live: bins kept in memory (default: the grid)")
    snapshotEveryBins: StrictInt | None = Field(None, ge=1, description="live: snapshot every N bins (default 60)")
    snapshotEverySeconds: PositiveSeconds | None = Field(None, description="live: snapshot every N s (default 30)")
    idleCloseSeconds: PositiveSeconds | None = Field(None, description="live: close after N idle seconds (off)")


class TopologyOverrideNode(BaseModel):
    """One node of `topologyOverride`: its id and the semantics to replace."""

    model_config = ConfigDict(extra="allow")

    id: str
    semantics: dict[str, Any] = Field(default_factory=dict)


class TopologyOverride(BaseModel):
    """The `topologyOverride` of a run request."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[TopologyOverrideNode] = Field(default_factory=list)


class RunRequest(BaseModel):
    """`POST /v1/runs` body (SPEC §8)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"mode": "simulation", "model": MODEL_EXAMPLE, "options": {"deterministicRunId": True}},
                {"mode": "simulation", "template": "order-system", "parameters": {"bins": 12, "q0": 0}},
                {
                    "mode": "overlay",
                    "baseRunId": "run_20251007T000000Z_1a2b3c4d",
                    "overlays": [{"id": "capacity", "kind": "const", "values": [15, 15, 15, 15]}],
                    "topologyOverride": {"nodes": [{"id": "Svc", "semantics": {"slaMin": 5}}]},
                },
                {"mode": "live", "model": MODEL_EXAMPLE, "options": {"runId": "r1", "graceBins": 2}},
            ]
        },
    )

    mode: Literal["simulation", "telemetry", "overlay", "live"] = "simulation"
    model: str | dict[str, Any] | None = None
    template: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    telemetry: dict[str, Any] | None = None
    window: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    baseRunId: str | None = None
    overlays: list[dict[str, Any]] = Field(default_factory=list)
    topologyOverride: TopologyOverride | None = None
    options: RunOptions = Field(default_factory=lambda: RunOptions.model_validate({}))


@dataclass
class BatchJob:
    """A batch run to evaluate: the model source, its mode, telemetry and options."""

    source: str | dict[str, Any]
    base_dir: Path | None
    mode: str
    run_id: str | None = None
    deterministic: bool = False
    telemetry: dict[str, np.ndarray] = field(default_factory=dict)
    extra_warnings: list[dict[str, Any]] = field(default_factory=list)


def read_model_source(body: bytes, limit: int) -> str | dict[str, Any]:
    """A model posted as the whole body: YAML or JSON text, or JSON `{"model": <text or object>}`."""
    if len(body) > limit:
        raise TooLargeError(f"model is larger than {limit} bytes", limit=limit)
    if not body.strip():
        raise FlowTimeError("request body is empty: send the model as YAML or JSON", code="empty_body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FlowTimeError("request body is not UTF-8 text", code="malformed_body") from None
    if text.lstrip().startswith("{"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return text  # maybe a YAML flow mapping
        if isinstance(data, dict) and isinstance(data.get("model"), str | dict) and "grid" not in data:
            inner: str | dict[str, Any] = data["model"]
            return inner
    return text


def check_model_size(source: str | dict[str, Any], limit: int) -> None:
    """TooLargeError when the model text is over `limit` bytes."""
    if isinstance(source, str) and len(source.encode()) > limit:
        raise TooLargeError(f"model is larger than {limit} bytes", limit=limit)


def simulation_job(req: RunRequest, inputs_dir: Path, max_model_bytes: int, data_dir: Path) -> BatchJob:
    """A simulation from a model (text or object) or a template with parameters."""
    if (req.model is None) == (req.template is None):
        raise InvalidRequestError("give exactly one of model or template", code="invalid_request")
    warnings: list[dict[str, Any]] = []
    source: str | dict[str, Any]
    if req.template is not None:
        source, warnings = template_source(req.template, req.parameters, data_dir)
    else:
        assert req.model is not None
        source = req.model
        check_model_size(source, max_model_bytes)
        rendered = model_template_source(source, req.parameters, data_dir)  # upstream template text (§13)
        if rendered is not None:
            source, warnings = rendered
    check_model_size(source, max_model_bytes)
    return BatchJob(
        source,
        inputs_dir,
        "simulation",
        deterministic=req.options.deterministicRunId,
        extra_warnings=warnings,
    )


def template_source(
    template_id: str, parameters: dict[str, Any], data_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A template instantiated with `parameters`: the model and its warnings."""
    try:
        templates = import_module("compat_api.templates.catalog")
    except ImportError:
        raise InvalidRequestError("templates are not available", code="unsupported_template") from None
    text, resolved, warnings = templates.instantiate(template_id, parameters, data_dir=data_dir)
    data = parse_model_text(text)
    if not isinstance(data, dict):
        raise ModelError(f"template '{template_id}' did not produce a model mapping")
    data.setdefault("provenance", {"generator": GENERATOR, "templateId": template_id, "parameters": resolved})
    return data, [_as_warning(w) for w in warnings or []]


def model_template_source(
    model: str | dict[str, Any], parameters: dict[str, Any], data_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A model that is a template (parameters or placeholders) rendered with `parameters`, else None."""
    render_model = getattr(_catalog(), "render_model", None)
    if render_model is None:
        if parameters:
            raise InvalidRequestError("templates are not available", code="unsupported_template")
        return None
    out: tuple[dict[str, Any], list[dict[str, Any]]] | None = render_model(model, parameters, data_dir=data_dir)
    return out


def _catalog() -> Any:
    try:
        return import_module("compat_api.templates.catalog")
    except ImportError:
        return None


def _as_warning(w: Any) -> dict[str, Any]:
    if isinstance(w, dict):
        return dict(w)
    return {
        "code": "template",
        "severity": "info",
        "nodeId": None,
        "bins": [],
        "count": 0,
        "value": None,
        "message": str(w),
    }


def overlay_job(
    req: RunRequest, base: LoadedRun, spec_text: str, max_model_bytes: int, inputs_dir: Path | None = None
) -> BatchJob:
    """Base spec + overlays (replace by id, else append) + topologyOverride; base telemetry carried."""
    data = parse_model_text(spec_text)
    if not isinstance(data, dict):
        raise ModelError(f"run '{base.run_id}': spec.yaml is not a model mapping")
    data["nodes"] = apply_overlays(list(data.get("nodes") or []), req.overlays)
    if req.topologyOverride is not None:
        topo = dict(data.get("topology") or {})
        topo["nodes"] = apply_topology_override(list(topo.get("nodes") or []), req.topologyOverride)
        data["topology"] = topo
    base_provenance = read_manifest(base.run_dir).get("provenance") or {}
    data["provenance"] = {
        "generator": GENERATOR,
        "baseRunId": base.run_id,
        "templateId": base_provenance.get("templateId"),
    }
    base_dir = base.run_dir / "model"
    try:
        graph = load_graph(data, base_dir=base_dir)
    except ModelError:
        if inputs_dir is None:
            raise
        base_dir = inputs_dir
        graph = load_graph(data, base_dir=base_dir)
    carried = base.telemetry_series()
    telemetry = {sid: carried[sid] for sid in graph.telemetry_ids() if sid in carried}
    return BatchJob(data, base_dir, "overlay", deterministic=req.options.deterministicRunId, telemetry=telemetry)


def apply_overlays(nodes: list[Any], overlays: list[dict[str, Any]]) -> list[Any]:
    """The model's nodes with overlay nodes replacing (or added after) those with their ids."""
    out = list(nodes)
    index = {n.get("id"): i for i, n in enumerate(out) if isinstance(n, dict)}
    for k, node in enumerate(overlays):
        nid = node.get("id")
        if not isinstance(nid, str):
            raise ModelError(f"overlays[{k}]: id: required")
        if nid in index:
            out[index[nid]] = node
        else:
            index[nid] = len(out)
            out.append(node)
    return out


def apply_topology_override(nodes: list[Any], override: TopologyOverride) -> list[Any]:
    """The topology nodes with the override's semantics applied (ModelError for an unknown node)."""
    out = [dict(n) if isinstance(n, dict) else n for n in nodes]
    index = {n.get("id"): i for i, n in enumerate(out) if isinstance(n, dict)}
    for patch in override.nodes:
        if patch.id not in index:
            raise ModelError(f"topologyOverride: unknown topology node '{patch.id}'", nodeId=patch.id)
        node = out[index[patch.id]]
        for key, value in patch.model_dump(exclude={"id"}).items():
            old = node.get(key)
            node[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def planned_run_id(job: BatchJob, *, max_cells: int | None = None) -> str:
    """The run id a job will get, decided before evaluation (async runs answer with it at once).
    Validates the model fully, so a bad model fails here with 422 (413 over the cell budget)."""
    doc = load_model(job.source, base_dir=job.base_dir)
    check_cells(compile_model(build_model(doc)), doc.grid.bins, max_cells)
    if job.deterministic:
        spec = spec_text_of(doc, job.source if isinstance(job.source, str) else None)
        return new_run_id(scenario_hash(spec, doc.seed))
    return new_run_id()


def execute(
    job: BatchJob, runs_dir: Path, *, fsync: bool = True, max_cells: int | None = None
) -> tuple[BatchRun, ArtifactsInfo]:
    """Evaluate the job and write its artifacts to `<runs_dir>/<runId>/` (413 over `max_cells`)."""
    run = run_model(
        job.source,
        base_dir=job.base_dir,
        telemetry=job.telemetry or None,
        mode=job.mode,
        run_id=job.run_id,
        deterministic_run_id=job.deterministic,
        max_cells=max_cells,
    )
    if job.extra_warnings:
        run.result.warnings.extend(job.extra_warnings)
    run_id = run.result.run_id
    lock = _WRITE_LOCKS[zlib.crc32(run_id.encode()) % len(_WRITE_LOCKS)]
    with lock:
        info = write_run_artifacts(run.result, runs_dir / run_id, fsync=fsync)
    return run, info


__all__ = [
    "BatchJob",
    "RunOptions",
    "RunRequest",
    "TopologyOverride",
    "apply_overlays",
    "apply_topology_override",
    "execute",
    "overlay_job",
    "planned_run_id",
    "read_model_source",
    "simulation_job",
    "template_source",
]
