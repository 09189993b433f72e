"""Model validation (SPEC §1, §2): every error names the node and the field; upstream-style models
load and run unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine_live.errors import CycleError, ModelError
from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch


def model(nodes: list[dict[str, Any]], bins: int = 3, **extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 1, "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes"}, "nodes": nodes, **extra}


def const(nid: str, values: list[float]) -> dict[str, Any]:
    return {"id": nid, "kind": "const", "values": values}


def expr(nid: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": nid, "kind": "expr", "expr": text, **extra}


def load_and_compile(m: dict[str, Any] | str) -> None:
    compile_model(load_graph(m))


def messages(m: dict[str, Any] | str) -> list[str]:
    with pytest.raises(ModelError) as info:
        load_and_compile(m)
    return info.value.errors


# -- cycles and SHIFT ------------------------------------------------------------------------------


def test_same_bin_cycle_names_its_nodes() -> None:
    m = model([const("a", [1, 1, 1]), expr("x", "a + y"), expr("y", "x * 2"), expr("z", "x + 1")])
    with pytest.raises(CycleError) as info:
        load_and_compile(m)
    msg = str(info.value)
    assert "'x'" in msg and "'y'" in msg
    assert "'z'" not in msg and "'a'" not in msg
    assert info.value.details["nodes"] == ["x", "y"]


def test_self_reference_without_shift_is_cycle() -> None:
    with pytest.raises(CycleError, match="'x'"):
        load_and_compile(model([expr("x", "x + 1", initial=0)]))


def test_shift_zero_conv_and_rolling_are_same_bin() -> None:
    for text in ("SHIFT(y, 0)", "CONV(y, [0, 1])", "ROLLING_MAX(y, 2)", "ROLLING_MEAN(y, 3)"):
        with pytest.raises(CycleError, match=r"'x'.*'y'"):
            load_and_compile(model([expr("x", text), expr("y", "SHIFT(x, 1) + x")]))


def test_cycle_through_queue_is_error() -> None:
    m = model(
        [expr("arr", "q_outflow + 1"), {"id": "q", "kind": "serviceWithBuffer", "inflow": "arr", "outflow": "arr"}]
    )
    with pytest.raises(CycleError, match=r"'arr'.*'q'"):
        load_and_compile(m)


def test_self_shift_without_initial_is_error() -> None:
    errs = messages(model([const("a", [1, 1, 1]), expr("backlog", "MAX(0, SHIFT(backlog, 1) + a)")]))
    assert errs == ["node 'backlog': initial: required because the expression SHIFTs itself"]


def test_self_shift_with_initial_loads() -> None:
    load_and_compile(model([expr("b", "SHIFT(b, 1) + 1", initial=0)]))


# -- references, values, syntax --------------------------------------------------------------------


def test_unknown_reference_message() -> None:
    errs = messages(model([const("capacity", [1, 1, 1]), expr("served", "MIN(2, capcity)")]))
    assert errs == ["node 'served': unknown reference 'capcity'"]


def test_unknown_reference_in_queue_names_field() -> None:
    errs = messages(model([{"id": "q", "kind": "serviceWithBuffer", "inflow": "nope"}]))
    assert errs == ["node 'q': inflow: unknown reference 'nope'"]
    errs = messages(
        model(
            [{"id": "q", "kind": "serviceWithBuffer", "dispatchSchedule": {"periodBins": 2, "capacitySeries": "cap"}}]
        )
    )
    assert errs == ["node 'q': dispatchSchedule.capacitySeries: unknown reference 'cap'"]


def test_wrong_const_length() -> None:
    errs = messages(model([const("a", [1, 2])], bins=3))
    assert errs == ["node 'a': values: expected exactly 3 numbers (grid.bins), got 2"]


def test_non_numeric_const_values() -> None:
    errs = messages(model([const("a", [1, "x", 3])]))  # type: ignore[list-item]
    assert len(errs) == 1 and errs[0].startswith("node 'a': values")


def test_expr_syntax_error_names_node() -> None:
    errs = messages(model([expr("x", "MINN(1, 2)")]))
    assert errs == ["node 'x': expr: unknown function 'MINN' at position 0"]


def test_bad_yaml() -> None:
    with pytest.raises(ModelError, match="not valid YAML"):
        load_graph("grid: {bins: 3\nnodes: [")


def test_yaml_and_json_text_load() -> None:
    text = """
schemaVersion: 1
grid: {bins: 2, binSize: 1, binUnit: hours, start: "2025-10-07T03:00:00Z"}
nodes:
  - {id: a, kind: const, values: [1, 2]}
  - {id: b, kind: expr, expr: "a * 3"}
"""
    plan = compile_model(load_graph(text))
    assert evaluate_batch(plan)[plan.row["b"]].tolist() == [3, 6]
    json_text = (
        '{"grid": {"bins": 2, "binSize": 1, "binUnit": "days"}, '
        '"nodes": [{"id": "a", "kind": "const", "values": [4, 5]}]}'
    )
    plan = compile_model(load_graph(json_text))
    assert evaluate_batch(plan)[plan.row["a"]].tolist() == [4, 5]


def test_model_not_a_mapping() -> None:
    with pytest.raises(ModelError):
        load_graph("- 1\n- 2\n")


# -- unknown and upstream keys ----------------------------------------------------------------------


def test_unknown_node_key_is_named() -> None:
    errs = messages(model([{"id": "a", "kind": "const", "values": [1, 1, 1], "valeus": [2]}]))
    assert errs == ["node 'a': unknown key 'valeus'"]


def test_unknown_keys_everywhere_are_named() -> None:
    m = model([const("a", [1, 1, 1])], grdi=1)
    assert messages(m) == ["model: unknown key 'grdi'"]
    m = model([const("a", [1, 1, 1])])
    m["grid"]["binsize"] = 5
    assert messages(m) == ["grid: unknown key 'binsize'"]
    m = model([const("a", [1, 1, 1])], topology={"nodes": [{"id": "S", "semantics": {"arrival": "a"}}]})
    assert messages(m) == ["topology node 'S': semantics: unknown key 'arrival'"]
    m = model([const("a", [1, 1, 1]), {"id": "q", "kind": "serviceWithBuffer", "inflow": "a", "wiplimit": 3}])
    assert messages(m) == ["node 'q': unknown key 'wiplimit'"]


def test_several_errors_are_reported_together() -> None:
    # document checks (keys, kinds) are reported together ...
    errs = messages(model([{"id": "a", "kind": "const", "values": [1, 1, 1], "vals": 1}, {"id": "c", "kind": "cosnt"}]))
    assert errs[0] == "node 'a': unknown key 'vals'"
    assert errs[1].startswith("node 'c': kind: must be one of")
    assert len(errs) == 2
    # ... and so are reference and value checks
    errs = messages(model([const("a", [1]), expr("b", "zz + yy")]))
    assert errs == [
        "node 'a': values: expected exactly 3 numbers (grid.bins), got 1",
        "node 'b': unknown reference 'yy'",
        "node 'b': unknown reference 'zz'",
    ]


def test_upstream_keys_accepted_with_info() -> None:
    m = model(
        [{"id": "a", "kind": "const", "values": [1, 2, 3], "metadata": {"x": 1}, "nodeRole": "source"}],
        classes=[{"id": "gold"}],
        topology={
            "nodes": [
                {"id": "A", "kind": "service", "semantics": {"arrivals": "a"}, "group": "g"},
                {"id": "B", "kind": "sink", "semantics": {}},
            ],
            "edges": [{"id": "e1", "from": "A", "to": "B", "type": "flow", "lag": 0, "measure": "x"}],
        },
    )
    graph = load_graph(m)
    infos = [i for i in graph.info if i["code"] == "unused_upstream_key"]
    keys = sorted(i["message"].split("key '")[1].split("'")[0] for i in infos)
    assert keys == ["classes", "group", "id", "lag", "measure", "metadata", "nodeRole", "type"]
    assert all(i["severity"] == "info" for i in infos)
    assert any("node 'a'" in i["message"] for i in infos)


# -- schema version, grid -------------------------------------------------------------------------


def test_schema_version_2_is_error() -> None:
    m = model([const("a", [1, 1, 1])])
    m["schemaVersion"] = 2
    assert messages(m) == ["model: schemaVersion: only 1 is supported, got 2"]


@pytest.mark.parametrize(
    ("grid", "fragment"),
    [
        ({"bins": 3, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:02:00Z"}, "bin boundary"),
        ({"bins": 3, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:05:30Z"}, "bin boundary"),
        ({"bins": 3, "binSize": 1, "binUnit": "hours", "start": "2025-10-07T00:30:00Z"}, "bin boundary"),
        ({"bins": 3, "binSize": 1, "binUnit": "days", "start": "2025-10-07T01:00:00Z"}, "bin boundary"),
        ({"bins": 3, "binSize": 7, "binUnit": "minutes", "start": "2025-10-07T00:10:00Z"}, "bin boundary"),
        ({"bins": 3, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00+00:00"}, "ending in 'Z'"),
        ({"bins": 3, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00"}, "ending in 'Z'"),
        ({"bins": 3, "binSize": 5, "binUnit": "minutes", "start": "yesterdayZ"}, "not a valid time"),
        ({"bins": 0, "binSize": 5, "binUnit": "minutes"}, "bins"),
        ({"bins": 3, "binSize": 1001, "binUnit": "minutes"}, "binSize"),
        ({"bins": 3, "binSize": 5, "binUnit": "seconds"}, "binUnit"),
    ],
)
def test_bad_grid(grid: dict[str, Any], fragment: str) -> None:
    m = {"grid": grid, "nodes": [const("a", [1, 1, 1])]}
    errs = messages(m)
    assert len(errs) == 1 and errs[0].startswith("grid: ") and fragment in errs[0], errs


@pytest.mark.parametrize(
    "grid",
    [
        {"bins": 3, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:05:00Z"},
        {"bins": 3, "binSize": 7, "binUnit": "minutes", "start": "2025-10-07T00:14:00Z"},
        {"bins": 3, "binSize": 2, "binUnit": "hours", "start": "2025-10-07T22:00:00Z"},
        {"bins": 3, "binSize": 1, "binUnit": "weeks", "start": "2025-10-07T00:00:00Z"},
        {"bins": 3, "binSize": 5, "binUnit": "minutes", "startTimeUtc": "2025-10-07T00:10:00Z"},
    ],
)
def test_good_grid(grid: dict[str, Any]) -> None:
    load_and_compile({"grid": grid, "nodes": [const("a", [1, 1, 1])]})


def test_live_needs_start() -> None:
    with pytest.raises(ModelError, match="start: required"):
        load_graph({"grid": {"binSize": 5, "binUnit": "minutes"}, "nodes": []}, live=True)
    graph = load_graph(
        {
            "grid": {"binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"},
            "nodes": [{"id": "x", "kind": "const", "source": "telemetry"}],
        },
        live=True,
    )
    assert graph.grid.bins is None


def test_duplicate_ids() -> None:
    errs = messages(model([const("a", [1, 1, 1]), const("a", [2, 2, 2])]))
    assert "node 'a': duplicate id" in errs
    m = model([const("a", [1, 1, 1])], topology={"nodes": [{"id": "S"}, {"id": "S"}]})
    assert "topology node 'S': duplicate id" in messages(m)


def test_bad_node_id() -> None:
    errs = messages(model([const("1a", [1, 1, 1])]))
    assert len(errs) == 1 and errs[0].startswith("nodes[0]: id:")


def test_pmf_errors() -> None:
    # probabilities that do not sum to 1 are renormalized (SPEC §2); all zero is an error
    graph = load_graph(model([{"id": "p", "kind": "pmf", "pmf": {"values": [1, 2], "probabilities": [0.5, 0.4]}}]))
    assert [i["code"] for i in graph.info] == ["pmf_renormalized"]
    errs = messages(model([{"id": "p", "kind": "pmf", "pmf": {"values": [1, 2], "probabilities": [0, 0]}}]))
    assert errs == ["node 'p': pmf.probabilities: are all zero (give at least one positive probability)"]
    errs = messages(model([{"id": "p", "kind": "pmf", "pmf": {"values": [1, 1], "probabilities": [0.5, 0.5]}}]))
    assert errs == ["node 'p': pmf.values: must be unique"]
    # within tolerance
    load_and_compile(model([{"id": "p", "kind": "pmf", "pmf": {"values": [1, 2], "probabilities": [0.5, 0.50009]}}]))


def test_edge_to_unknown_topology_node() -> None:
    m = model([const("a", [1, 1, 1])], topology={"nodes": [{"id": "A"}], "edges": [{"from": "A", "to": "B"}]})
    assert messages(m) == ["topology.edges: unknown topology node 'B'"]


def test_unknown_output_series() -> None:
    m = model([const("a", [1, 1, 1])], outputs=[{"series": "b", "as": "b.csv"}])
    assert messages(m) == ["outputs: unknown series 'b'"]


# -- upstream-style models --------------------------------------------------------------------------

UPSTREAM = """
window:
  bins: 6
  binSize: 1
  binUnit: hours
  startTimeUtc: "2025-01-01T00:00:00Z"
metadata:
  title: upstream fixture
classes:
  - id: DEFAULT
nodes:
  - id: arrivals
    kind: const
    values: [10, 10, 10, 10, 10, 10]
  - id: served
    kind: const
    values: [5, 5, 5, 5, 5, 5]
  - id: split
    kind: router
    router:
      inputs: {queue: arrivals}
      routes:
        - {target: to_a, weight: 3}
        - {target: to_b, weight: 1}
  - id: batch
    kind: serviceWithBuffer
    inflow: arrivals
    outflow: served
    dispatchSchedule: {kind: periodic, periodBins: 3, phaseOffset: 0}
topology:
  nodes:
    - id: Ingress
      semantics: {arrivals: arrivals, served: served}
    - id: BatchQueue
      kind: queue
      semantics: {arrivals: to_a, served: served, queueDepth: batch}
    - id: SideQueue
      kind: queue
      nodeRole: buffer
      semantics: {arrivals: to_b, served: served}
  edges:
    - {id: e1, source: "Ingress:out", target: "BatchQueue:in", weight: 0.75, type: flow}
    - {id: e2, source: Ingress, target: SideQueue, weight: 0.25}
"""


def test_upstream_style_model_loads_and_runs() -> None:
    graph = load_graph(UPSTREAM)
    assert graph.grid.start == "2025-01-01T00:00:00Z"
    assert graph.grid.bin_minutes == 60
    assert [t.kind for t in graph.topo] == ["service", "queue", "queue"]
    assert [(e.source, e.target, e.weight) for e in graph.edges] == [
        ("Ingress", "BatchQueue", 0.75),
        ("Ingress", "SideQueue", 0.25),
    ]
    assert any(i["code"] == "unused_upstream_key" for i in graph.info)
    plan = compile_model(graph)
    V = evaluate_batch(plan)

    def s(x: str) -> list[float]:
        return list(V[plan.row[x]])

    assert s("batch") == [5, 15, 25, 30, 40, 50]
    assert s("batch_outflow") == [5, 0, 0, 5, 0, 0]
    assert s("to_a") == [7.5] * 6
    assert s("to_b") == [2.5] * 6
    assert s("side_queue_queue") == [0] * 6  # 2.5 in, 5 out
    assert graph.topo[1].fields["queueDepth"] == "batch"
    assert np.all(V[plan.row["__zero__"]] == 0)


@pytest.mark.parametrize(
    ("probabilities", "fragment"),
    [
        ([float("nan"), 1.0], "must be finite and at least 0"),  # NaN used to pass the sum check
        ([-0.5, 1.5], "must be finite and at least 0"),
        ([float("inf"), 0.0], "must be finite and at least 0"),
    ],
)
def test_pmf_probabilities_must_be_finite_and_not_negative(probabilities: list[float], fragment: str) -> None:
    """Issue 12 #10: NaN or negative probabilities were accepted."""
    pmf = {"id": "p", "kind": "pmf", "pmf": {"values": [1, 2], "probabilities": probabilities}}
    errs = messages(model([pmf]))
    assert any("node 'p'" in e and fragment in e for e in errs), errs


def test_a_file_source_that_is_not_a_regular_file_is_refused(tmp_path: Any) -> None:
    """Issue 12 #10: `file:` naming a FIFO used to block a worker thread forever on read."""
    import os

    os.mkfifo(tmp_path / "pipe.csv")
    text = 'grid: {bins: 3, binSize: 5, binUnit: minutes}\nnodes:\n  - {id: a, kind: const, source: "file:pipe.csv"}\n'
    with pytest.raises(ModelError) as info:
        compile_model(load_graph(text, base_dir=tmp_path))
    assert any("not a regular file" in e for e in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    ("grid", "ok"),
    [
        ({"bins": 2, "binSize": 1, "binUnit": "days", "start": "9999-12-30T00:00:00Z"}, False),
        ({"bins": 1, "binSize": 1, "binUnit": "days", "start": "9999-12-30T00:00:00Z"}, True),
        ({"bins": 3, "binSize": 1000, "binUnit": "weeks", "start": "9990-01-01T00:00:00Z"}, False),
    ],
)
def test_a_grid_that_runs_past_the_year_9999_is_invalid(grid: dict[str, Any], ok: bool) -> None:
    """Issue 12 #5/#9: such grids validated, then every timestamp past 9999 failed (5xx, wedged runs)."""
    doc = {"grid": grid, "nodes": [const("a", [1.0] * grid["bins"])]}
    if ok:
        load_and_compile(doc)
    else:
        assert any("past the year 9999" in e for e in messages(doc))


def test_a_live_grid_without_room_for_one_bin_is_invalid() -> None:
    text = (
        'grid: {binSize: 1, binUnit: weeks, start: "9999-12-27T00:00:00Z"}\n'
        "nodes:\n  - {id: x, kind: const, source: telemetry}\n"
    )
    with pytest.raises(ModelError) as info:
        load_graph(text, live=True)
    assert any("past the year 9999" in e for e in info.value.errors)


def test_a_window_of_ten_million_bins_costs_nothing_until_bins_exist() -> None:
    """Issue 12 #6: ROLLING_MEAN's unit taps were materialised (3e8 of them: +2.3 GB on /v1/validate).
    A live grid has no bins to bound the window by, so only the literal bound (10^7) applies."""
    import tracemalloc

    text = (
        'grid: {binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}\nnodes:\n'
        '  - {id: a, kind: const, source: telemetry}\n  - {id: m, kind: expr, expr: "ROLLING_MEAN(a, 10000000)"}\n'
    )
    tracemalloc.start()
    compile_model(load_graph(text, live=True))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4_000_000, peak


@pytest.mark.parametrize(
    "text", ["ROLLING_MEAN(a, 4)", "ROLLING_MAX(a, 4)", "2 * MIN(ROLLING_MEAN(a, 2), ROLLING_MAX(a, 9))"]
)
def test_a_window_longer_than_the_grid_is_invalid(text: str) -> None:
    """SPEC §10: validation accepts only windows ≤ bins."""
    errs = messages(model([const("a", [1.0, 2.0, 3.0]), expr("m", text)]))
    assert any(e.startswith("node 'm': expr: a window of") and "longer than the grid (3 bins)" in e for e in errs)
    load_and_compile(model([const("a", [1.0, 2.0, 3.0]), expr("m", "ROLLING_MEAN(a, 3)")]))


@pytest.mark.parametrize("name", ["../../evil.csv", "/tmp/evil.csv", "sub/x.csv", "a\nb.csv", ".hidden", "x" * 201])
def test_an_output_file_name_must_be_a_plain_name(name: str) -> None:
    """Issue 12 #9: `outputs[].as` with `../`, an absolute path or 300 characters was a 500 at write time."""
    errs = messages(model([const("a", [1.0, 2.0, 3.0])], outputs=[{"series": "a", "as": name}]))
    assert any(e.startswith("outputs[0]: as:") for e in errs), errs


def test_ids_that_would_not_fit_a_file_name_are_invalid() -> None:
    assert any("must match" in e for e in messages(model([const("a" * 101, [1.0, 2.0, 3.0])])))
    topo = {"nodes": [{"id": "a/b", "semantics": {"arrivals": "a"}}]}
    errs = messages(model([const("a", [1.0, 2.0, 3.0])], topology=topo))
    assert any(e.startswith("topology.nodes[0]") and "'/'" in e for e in errs), errs
