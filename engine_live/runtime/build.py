"""Building a run's handle from its create record: model text → graph → plan → `LiveRun`."""

from __future__ import annotations

from typing import Any

import orjson

from engine_live.derived.live_hooks import DerivedHooks
from engine_live.errors import ModelError, TooLargeError
from engine_live.model.build import build_model
from engine_live.model.document import load_model
from engine_live.plan.compiler import compile_model
from engine_live.runtime.context import RuntimeContext
from engine_live.runtime.handle import RunDurability, RunHandle, RunModel
from engine_live.runtime.records import CreateRecord
from engine_live.state.live_run import LiveRun

MAX_OPTION_BINS = 1_000_000_000  # far beyond any grid; keeps every bin count an exact int64
MAX_OPTION_SECONDS = 1e9  # about 31 years; finite, so a cadence never overflows the clock
OPTION_KEYS = frozenset(
    {"runId", "graceBins", "retentionBins", "snapshotEveryBins", "snapshotEverySeconds", "idleCloseSeconds"}
)


def model_text(model: str | dict[str, Any]) -> str:
    """The model as the log stores it: the text given, or an object as JSON."""
    return model if isinstance(model, str) else orjson.dumps(model).decode()


def parse_create(body: dict[str, Any]) -> tuple[str | dict[str, Any], dict[str, Any]]:
    """The model and options of a live create request (ModelError naming the bad field)."""
    model = body.get("model")
    if not isinstance(model, str | dict):
        raise ModelError("model: required (YAML/JSON text or an object)")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ModelError("options: must be an object")
    unknown = set(options) - OPTION_KEYS - {"deterministicRunId", "async"}
    if unknown:
        raise ModelError(f"options: unknown key '{sorted(unknown)[0]}'")
    for key in ("graceBins", "retentionBins", "snapshotEveryBins"):
        value = options.get(key)
        lowest = 0 if key == "graceBins" else 1
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_OPTION_BINS
        ):
            raise ModelError(f"options.{key}: must be an integer from {lowest} to {MAX_OPTION_BINS}", option=key)
    for key in ("snapshotEverySeconds", "idleCloseSeconds"):
        value = options.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_OPTION_SECONDS
        ):
            raise ModelError(
                f"options.{key}: must be a number of seconds above 0, at most {MAX_OPTION_SECONDS}", option=key
            )
    return model, options


def build_handle(ctx: RuntimeContext, create: CreateRecord) -> RunHandle:
    """A handle for a new (or recovering) run: validate and compile its model, make the `LiveRun`."""
    settings = ctx.settings
    if len(create.model.encode()) > settings.max_model_bytes:
        raise TooLargeError(f"model exceeds {settings.max_model_bytes} bytes")
    doc = load_model(create.model, base_dir=settings.inputs_dir, live=True)
    graph = build_model(doc)
    plan = compile_model(graph)
    options = create.options
    run = LiveRun(
        plan,
        run_id=create.run_id,
        epoch=create.epoch,
        grace_bins=int(options.get("graceBins", 2)),
        retention_bins=options.get("retentionBins"),
        hooks=DerivedHooks(plan),
        persisted_before=0,
    )
    model = RunModel(graph, create.model, ctx.logs.frame_reader(graph, create.run_id), provenance=doc.provenance)
    return RunHandle(run, model, RunDurability(create), settings.runs_dir / create.run_id / "live")
