"""capture → restore: the restored run is bit-identical to the original from the capture point on.

Property: random model, random records (gaps, duplicates, late corrections, far-ahead bins);
capture at a random record boundary, restore (also through the JSON form of the counters), feed
both runs the remaining records and close them: the events after the capture and the final
matrices are identical, seq numbering included. Hooks with state ride along.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_live.derived.hooks_state import jsonable
from engine_live.derived.live_hooks import DerivedHooks
from engine_live.errors import OutsideRetentionError, StateMismatchError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import Plan, compile_model
from engine_live.protocol import Event
from engine_live.state.live_run import BinHooks, LiveRun
from engine_live.state.live_state import RunState, capture, restore
from tests.engine_live.live_support import Frame, TinyRun, apply_frames, draw_records

EXPRS = (
    "{a} + {b}",
    "MIN({a}, {b})",
    "SHIFT({a}, 2)",
    "CONV({a}, [0.5, 0.3, 0.2])",
    "ROLLING_MEAN({a}, 3)",
    "ROLLING_MAX({b}, 4)",
    "{a} * {b} + SHIFT({b}, 1)",
)


class FlagHooks(BinHooks):
    """A stateful hook: flags bins whose first row is > 10 (add once, clear when corrected away)."""

    def __init__(self) -> None:
        self.flagged: set[int] = set()
        self.published = 0

    def warnings(self, run: LiveRun, bin_index: int) -> list[tuple[Literal["add", "clear"], dict[str, Any]]]:
        self.published += 1
        hot = bool(run.V[0, bin_index - run.base] > 10)
        w = {"code": "hot", "nodeId": None, "bins": [bin_index], "count": self.published}
        if hot and bin_index not in self.flagged:
            self.flagged.add(bin_index)
            return [("add", w)]
        if not hot and bin_index in self.flagged:
            self.flagged.discard(bin_index)
            return [("clear", w)]
        return []

    def state(self) -> dict[str, Any]:
        return {"flagged": sorted(self.flagged), "published": self.published}

    def from_state(self, state: dict[str, Any]) -> None:
        self.flagged, self.published = set(state["flagged"]), int(state["published"])


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    bins = draw(st.integers(4, 30))
    n_tele = draw(st.integers(1, 3))
    nodes: list[dict[str, Any]] = [{"id": f"t{i}", "kind": "const", "source": "telemetry"} for i in range(n_tele)]
    names = [n["id"] for n in nodes]
    for i in range(draw(st.integers(1, 4))):
        a, b = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        nodes.append({"id": f"e{i}", "kind": "expr", "expr": draw(st.sampled_from(EXPRS)).format(a=a, b=b)})
        names.append(f"e{i}")
    nodes.append(
        {
            "id": "q",
            "kind": "serviceWithBuffer",
            "inflow": draw(st.sampled_from(names)),
            "outflow": draw(st.sampled_from(names)),
            "initial": 2,
        }
    )
    model: dict[str, Any] = {
        "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"},
        "nodes": nodes,
    }
    if draw(st.booleans()):
        semantics = {"arrivals": "t0", "served": "e0", "errors": "telemetry"}
        model["topology"] = {"nodes": [{"id": "Svc", "kind": "serviceWithBuffer", "semantics": semantics}]}
    return model


values = st.one_of(
    st.integers(-3, 20).map(float), st.floats(-100, 100, allow_nan=False, width=32).map(float), st.just(-0.0)
)


def feed(run: LiveRun, records: list[list[Frame]]) -> list[Event]:
    """Apply records as the service would: a record rejected whole changes nothing."""
    events: list[Event] = []
    for record in records:
        try:
            events += apply_frames(run, record).events
        except OutsideRetentionError:
            continue
    return events


def json_round_trip(state: RunState) -> RunState:
    counters = orjson.loads(orjson.dumps(state.counters()))
    return RunState.from_counters(counters, state.V.copy(), state.P.copy())


def make_hooks(kind: str, plan: Plan) -> BinHooks:
    return FlagHooks() if kind == "flag" else DerivedHooks(plan) if kind == "derived" else BinHooks()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models(), data=st.data())
def test_restored_run_continues_bit_identically(model: dict[str, Any], data: st.DataObject) -> None:
    plan = compile_model(load_graph(model, live=True))
    bins = model["grid"]["bins"]
    tele = plan.graph.telemetry_ids()
    records = draw_records(data, bins, tele, values)
    at = data.draw(st.integers(0, len(records)), "snapshot at")
    retention = data.draw(st.sampled_from([bins, max(1, bins // 2), 3]), "retention")
    grace = data.draw(st.integers(0, 3), "grace")
    hooks_kind = data.draw(st.sampled_from(["none", "flag", "derived"]), "hooks")
    cls = TinyRun if data.draw(st.booleans(), "tiny") else LiveRun

    def new_run() -> LiveRun:
        run = cls(
            plan, run_id="r", epoch="e", grace_bins=grace, retention_bins=retention, hooks=make_hooks(hooks_kind, plan)
        )
        run.start()
        return run

    whole = new_run()
    feed(whole, records[:at])
    expected = feed(whole, records[at:]) + whole.close() + whole.complete()

    part = new_run()
    feed(part, records[:at])
    state = capture(part)
    feed(part, [[(0, tele[0], 99.0)]])  # the capture is a copy: later changes do not leak in
    restored = restore(plan, json_round_trip(state), make_hooks(hooks_kind, plan))
    got = feed(restored, records[at:]) + restored.close() + restored.complete()

    assert orjson.dumps(got) == orjson.dumps(expected)
    for attr in ("seq", "revision", "model_revision", "watermark", "last_bin", "base", "status", "epoch"):
        assert getattr(restored, attr) == getattr(whole, attr), attr
    assert restored.V.shape == whole.V.shape
    assert np.array_equal(restored.V.view(np.uint64), whole.V.view(np.uint64))
    assert np.array_equal(restored.P, whole.P)


def test_capture_keeps_only_held_columns_and_the_counters() -> None:
    plan = compile_model(load_graph(models_fixed(), live=True))
    run = LiveRun(plan, run_id="r", epoch="e", hooks=FlagHooks())
    run.start()
    apply_frames(run, [(0, "t0", 12.0), (1, "t0", 3.0), (5, "t0", -0.0)])
    state = capture(run)
    assert state.V.shape == (plan.n_rows, 6) and state.columns == run.V.shape[1]
    assert (state.seq, state.watermark, state.last_bin) == (run.seq, 5, run.last_bin)
    assert jsonable(state.hooks) == jsonable(run.hooks.state())  # type: ignore[attr-defined]
    assert np.signbit(state.V[plan.row["t0"], 5])


def test_restore_refuses_a_state_of_another_model() -> None:
    plan = compile_model(load_graph(models_fixed(), live=True))
    run = LiveRun(plan, run_id="r", epoch="e")
    run.start()
    other = compile_model(load_graph(models_fixed(extra=True), live=True))
    with pytest.raises(StateMismatchError):
        restore(other, capture(run))


def test_hooks_restored_by_a_classmethod_constructor() -> None:
    plan = compile_model(load_graph(models_fixed(), live=True))
    run = LiveRun(plan, run_id="r", epoch="e", hooks=DerivedHooks(plan))
    run.start()
    apply_frames(run, [(b, "t0", float(b * 7 % 5)) for b in range(6)])
    restored = restore(plan, capture(run), DerivedHooks(plan))
    assert isinstance(restored.hooks, DerivedHooks) and restored.hooks is not run.hooks
    assert jsonable(restored.hooks.state()) == jsonable(run.hooks.state())  # type: ignore[attr-defined]


def models_fixed(extra: bool = False) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "t0", "kind": "const", "source": "telemetry"},
        {"id": "e0", "kind": "expr", "expr": "SHIFT(t0, 1) + t0"},
    ]
    if extra:
        nodes.append({"id": "e1", "kind": "expr", "expr": "t0 * 2"})
    return {"grid": {"bins": 12, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"}, "nodes": nodes}
