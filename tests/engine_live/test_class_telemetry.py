"""Class telemetry (SPEC §14): live frames with `classId` feed a telemetry-fed class source; its total
is their sum unless a total is sent too (then `class_totals_mismatch` where they differ); without
classes the total is split by the model's shares. Batch from a bundle ≡ live ≡ recovered, bit for bit."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.derived.live_hooks import DerivedHooks
from engine_live.errors import IngestError
from engine_live.model.build import load_graph
from engine_live.model.class_defs import class_input
from engine_live.plan.batch_run import collect_warnings
from engine_live.plan.compiler import Plan, compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.state.class_inputs import settle_batch
from engine_live.state.live_run import LiveRun
from engine_live.state.live_state import capture, restore
from ingestion.frames import FrameValidator
from tests.engine_live.live_support import TinyRun, apply_frames

BINS = 5
MODEL: dict[str, Any] = {
    "grid": {"bins": BINS, "binSize": 5, "binUnit": "minutes", "start": "2025-01-01T00:00:00Z"},
    "nodes": [
        {"id": "hub_in", "kind": "const", "source": "telemetry"},
        {
            "id": "splitter",
            "kind": "router",
            "inputs": {"queue": "hub_in"},
            "routes": [{"target": "airport", "classes": ["Alpha"]}, {"target": "general", "weight": 1}],
        },
    ],
    "topology": {"nodes": [{"id": "Hub", "semantics": {"arrivals": "hub_in", "served": "hub_in"}}]},
    "classes": [{"id": "Alpha"}, {"id": "Beta"}],
    "traffic": {
        "arrivals": [
            {"nodeId": "hub_in", "classId": "Alpha", "pattern": {"kind": "constant", "ratePerBin": 1}},
            {"nodeId": "hub_in", "classId": "Beta", "pattern": {"kind": "constant", "ratePerBin": 3}},
        ]
    },
}
FRAMES = [
    # bin 0: classes only → total 100 = 40 + 60
    {"bin": 0, "node": "Hub", "classId": "Alpha", "arrivals": 40},
    {"bin": 0, "node": "Hub", "classId": "Beta", "arrivals": 60},
    # bin 1: a total only → the model's shares 1:3
    {"bin": 1, "node": "Hub", "arrivals": 10},
    # bin 2: a total and classes that do not sum to it → mismatch 10; classes scaled to the total
    {"bin": 2, "node": "Hub", "arrivals": 100},
    {"bin": 2, "series": "hub_in", "classId": "Alpha", "value": 30},
    {"bin": 2, "node": "Hub", "classId": "Beta", "arrivals": 60},
    # bin 3: a total that agrees (and DEFAULT names the total)
    {"bin": 3, "node": "Hub", "classId": "DEFAULT", "arrivals": 90},
    {"bin": 3, "node": "Hub", "classId": "Alpha", "arrivals": 30},
    {"bin": 3, "node": "Hub", "classId": "Beta", "arrivals": 60},
    # bin 4: one class only → the total is that class
    {"bin": 4, "node": "Hub", "classId": "Beta", "arrivals": 7},
]


def live_run(plan: Plan) -> LiveRun:
    run = LiveRun(plan, run_id="r", epoch="e", grace_bins=0, hooks=DerivedHooks(plan))
    run.start()
    return run


def test_class_frames_feed_the_classes_and_the_total_hand_computed() -> None:
    graph = load_graph(MODEL, live=True)
    plan = compile_model(graph)
    run = live_run(plan)
    events = []
    for frame in FRAMES:  # one request per frame: bins close as soon as a value of the source is there
        events += run.apply(FrameValidator(graph, "r").validate([frame], last_bin=run.last_bin)).events
    run.close()

    def row(sid: str) -> list[float]:
        return run.V[plan.row[sid], :BINS].tolist()

    assert row("hub_in") == [100, 10, 100, 90, 7]
    assert row("hub_in@Alpha") == [40, 2.5, 100 * (30 / 90), 30, 0]
    assert row("hub_in@Beta") == [60, 7.5, 100 * (60 / 90), 60, 7]
    assert row("airport") == row("hub_in@Alpha")
    assert row("general") == [60, 7.5, 100 - 100 * (30 / 90), 60, 7]
    warnings = [e["warning"] for e in events if e["type"] == "warning_update" and e["op"] == "add"]
    mismatch = [w for w in warnings if w["code"] == "class_totals_mismatch"]
    # bin 2 is published after its total (the classes then sum to 0: no mismatch), then again after
    # each class frame corrects it: 100 − 30 and 100 − 90
    assert mismatch and mismatch[-1]["bins"] == [2] and mismatch[-1]["value"] == 10
    assert mismatch[-1]["nodeId"] == "Hub" and mismatch[-1]["seriesId"] == "hub_in"


def test_the_same_frames_in_one_request_and_batch_from_class_files_agree() -> None:
    graph = load_graph(MODEL, live=True)
    plan = compile_model(graph)
    run = live_run(plan)
    run.apply(FrameValidator(graph, "r").validate(FRAMES, last_bin=-1))
    run.close()
    telemetry = {sid: np.zeros(BINS) for sid in graph.telemetry_ids()}
    present = {sid: np.zeros(BINS, dtype=bool) for sid in graph.telemetry_ids()}
    batch = FrameValidator(graph, "r").validate(FRAMES, last_bin=-1)
    for b, sid, v in batch.frames():
        telemetry[sid][b], present[sid][b] = v, True
    settle_batch(graph, telemetry, present, BINS)
    V = evaluate_batch(plan, telemetry)
    assert np.array_equal(run.V[:, :BINS].view(np.uint64), V.view(np.uint64))
    found = [w for w in collect_warnings(graph, plan, V) if w["code"] == "class_totals_mismatch"]
    assert [(w["bins"], w["value"], w["nodeId"]) for w in found] == [([2], 10.0, "Hub")]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"bin": 0, "node": "Hub", "classId": "Gamma", "arrivals": 1}, "unknown_class"),
        ({"bin": 0, "node": "Hub", "classId": 3, "arrivals": 1}, "unknown_class"),
        ({"bin": 0, "series": "hub_in@Alpha:in", "value": 1}, "not_telemetry"),
    ],
)
def test_bad_class_frames_are_refused(frame: dict[str, Any], code: str) -> None:
    with pytest.raises(IngestError) as info:
        FrameValidator(load_graph(MODEL, live=True), "r").validate([frame], last_bin=-1)
    assert info.value.code == code


def test_a_class_frame_for_a_series_without_class_telemetry_is_refused() -> None:
    model = {**MODEL, "nodes": [*MODEL["nodes"], {"id": "other", "kind": "const", "source": "telemetry"}]}
    graph = load_graph(model, live=True)
    frame = {"bin": 0, "series": "other", "classId": "Alpha", "value": 1}
    with pytest.raises(IngestError) as info:
        FrameValidator(graph, "r").validate([frame], last_bin=-1)
    assert info.value.code == "no_class_telemetry"


values = st.one_of(st.integers(0, 20).map(float), st.floats(-5, 50, allow_nan=False, width=32).map(float))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_live_with_class_frames_equals_batch_and_a_restored_run(data: st.DataObject) -> None:
    """Random totals and classes, in random records with corrections, with a crash anywhere."""
    graph = load_graph(MODEL, live=True)
    plan = compile_model(graph)
    series = ("hub_in", class_input("hub_in", "Alpha"), class_input("hub_in", "Beta"))
    cells = [(b, s) for b in range(BINS) for s in series]
    chosen = data.draw(st.lists(st.sampled_from(cells), unique=True, max_size=len(cells)), "cells")
    frames = [(b, s, data.draw(values)) for b, s in chosen]
    frames += [(b, s, data.draw(values)) for b, s in data.draw(st.lists(st.sampled_from(chosen or cells), max_size=4))]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(frames)), max_size=6), "cuts"))
    crash = data.draw(st.integers(0, len(cuts) + 1), "crash")
    run: LiveRun = TinyRun(plan, run_id="r", epoch="e", grace_bins=data.draw(st.integers(0, 2)))
    run.start()
    telemetry = {sid: np.zeros(BINS) for sid in graph.telemetry_ids()}
    present = {sid: np.zeros(BINS, dtype=bool) for sid in graph.telemetry_ids()}
    for k, (lo, hi) in enumerate(itertools.pairwise([0, *cuts, len(frames)])):
        if k == crash:
            run = restore(plan, capture(run))
        apply_frames(run, frames[lo:hi])
        for b, s, v in frames[lo:hi]:
            telemetry[s][b], present[s][b] = v, True
    run.close()
    settle_batch(graph, telemetry, present, BINS)
    V = evaluate_batch(plan, telemetry)
    assert np.array_equal(run.V[:, :BINS].view(np.uint64), V.view(np.uint64))
    total, parts = V[plan.row["hub_in"]], V[plan.row["hub_in@Alpha"]] + V[plan.row["hub_in@Beta"]]
    assert np.all(np.abs(parts - total) <= 1e-9 * np.maximum(1.0, np.abs(total)))
