"""Primitives of SPEC §2 with hand-computed numbers: const (values and `file:` CSV), pmf (expected
value and sampled), serviceWithBuffer (initial, loss, WIP limits, overflow, dispatch), topology queue
synthesis and snake-case naming, retry echo, shared-capacity constraints, routers, and loops
closed through SHIFT."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine_live.errors import ModelError
from engine_live.model.build import load_graph
from engine_live.model.pcg32 import Pcg32
from engine_live.model.series_defs import ModelGraph
from engine_live.model.topology_builder import snake_case
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch, evaluate_range

NAN = math.nan
INF = math.inf


def model(nodes: list[dict[str, Any]], bins: int, **extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 1, "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes"}, "nodes": nodes, **extra}


def run(
    m: dict[str, Any] | str, base_dir: Path | None = None, telemetry: dict[str, list[float]] | None = None
) -> dict[str, np.ndarray]:
    """Evaluate in batch; bin by bin must give the same bits. Returns every series by id."""
    graph = load_graph(m, base_dir=base_dir)
    plan = compile_model(graph)
    tele = {k: np.asarray(v, dtype=np.float64) for k, v in (telemetry or {}).items()}
    V = evaluate_batch(plan, tele)
    bins = V.shape[1]
    W = np.zeros_like(V)
    for sid, vals in tele.items():
        W[plan.row[sid], :] = vals
    for t in range(bins):
        evaluate_range(plan, W, 0, t, t + 1)
    assert V.tobytes() == W.tobytes()
    return {name: V[plan.row[name]] for name in plan.names}


def same(actual: np.ndarray, expected: list[float]) -> None:
    a = np.asarray(actual, dtype=np.float64)
    assert np.array_equal(a, np.asarray(expected, dtype=np.float64), equal_nan=True), (list(a), expected)


def const(nid: str, values: list[float]) -> dict[str, Any]:
    return {"id": nid, "kind": "const", "values": values}


# -- const ----------------------------------------------------------------------------------------


def test_const_values() -> None:
    out = run(model([const("a", [1.5, -2, 0, 1e3])], 4))
    same(out["a"], [1.5, -2, 0, 1000])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bin_index,value\n0,1.5\n1,2\n2,-3\n3,4\n", [1.5, 2, -3, 4]),
        ("bin_index,value\n3,4\n0,1.5\n2,-3\n1,2\n", [1.5, 2, -3, 4]),  # any order
        ("bin_index,classId,value\n0,A,1\n0,B,0.5\n1,A,2\n2,A,-3\n2,B,0\n3,B,4\n", [1.5, 2, -3, 4]),
        ("1.5\n2\n-3\n4\n", [1.5, 2, -3, 4]),
    ],
    ids=["bin_value", "bin_value_unordered", "bin_class_value", "bare"],
)
def test_const_file_csv_formats(tmp_path: Path, text: str, expected: list[float]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demand.csv").write_text(text, encoding="utf-8")
    nodes = [
        {"id": "demand", "kind": "const", "source": "file:data/demand.csv"},
        {"id": "x", "kind": "expr", "expr": "demand * 2"},
    ]
    out = run(model(nodes, 4), base_dir=tmp_path)
    same(out["demand"], expected)
    same(out["x"], [2 * v for v in expected])


def test_const_file_short_is_zero_filled_with_warning(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("bin_index,value\n0,7\n1,8\n", encoding="utf-8")
    graph = load_graph(model([{"id": "d", "kind": "const", "source": "file:d.csv"}], 4), base_dir=tmp_path)
    assert [i["code"] for i in graph.info] == ["length_mismatch"]
    assert graph.info[0]["nodeId"] == "d"
    same(run(model([{"id": "d", "kind": "const", "source": "file:d.csv"}], 4), base_dir=tmp_path)["d"], [7, 8, 0, 0])


def test_const_file_escaping_model_folder_is_error(tmp_path: Path) -> None:
    inside = tmp_path / "model"
    inside.mkdir()
    (tmp_path / "secret.csv").write_text("1\n2\n", encoding="utf-8")
    nodes = [{"id": "d", "kind": "const", "source": "file:../secret.csv"}]
    with pytest.raises(ModelError) as info:
        load_graph(model(nodes, 2), base_dir=inside)
    assert "node 'd'" in str(info.value)
    assert "leaves the model folder" in str(info.value)


def test_const_file_missing_and_without_folder_are_errors(tmp_path: Path) -> None:
    nodes = [{"id": "d", "kind": "const", "source": "file:nope.csv"}]
    with pytest.raises(ModelError, match="node 'd'"):
        load_graph(model(nodes, 2), base_dir=tmp_path)
    with pytest.raises(ModelError, match=r"node 'd'.*model folder"):
        load_graph(model(nodes, 2))


def test_topology_file_and_telemetry_semantics_make_hidden_series(tmp_path: Path) -> None:
    (tmp_path / "arr.csv").write_text("10\n20\n30\n", encoding="utf-8")
    m = model(
        [const("cap", [5, 5, 5])],
        3,
        topology={
            "nodes": [
                {
                    "id": "Svc",
                    "kind": "serviceWithBuffer",
                    "semantics": {"arrivals": "file:arr.csv", "served": "telemetry", "capacity": "cap"},
                },
            ]
        },
    )
    graph = load_graph(m, base_dir=tmp_path)
    assert graph.hidden == frozenset({"Svc.arrivals", "Svc.served"})
    assert graph.telemetry_ids() == ("Svc.served",)
    out = run(m, base_dir=tmp_path, telemetry={"Svc.served": [4, 25, 1]})
    same(out["Svc.arrivals"], [10, 20, 30])
    same(out["Svc.served"], [4, 25, 1])
    same(out["svc_queue"], [6, 1, 30])  # outflow = served (not capacity): 6, max(0, 26-25)=1, 30
    same(out["svc_outflow"], [4, 25, 1])


# -- pmf ------------------------------------------------------------------------------------------


def test_pmf_expected_value() -> None:
    nodes = [
        {"id": "f", "kind": "pmf", "pmf": {"values": [0, 1, 2], "probabilities": [0.7, 0.2, 0.1]}},
        {"id": "g", "kind": "pmf", "pmf": {"values": [10, 20], "probabilities": [0.25, 0.75]}},
    ]
    out = run(model(nodes, 3))
    same(out["f"], [0.4, 0.4, 0.4])
    same(out["g"], [17.5, 17.5, 17.5])


def test_pcg32_spec_vector() -> None:
    g = Pcg32(42)
    assert [g.next() for _ in range(4)] == [1971522493, 242089394, 3457789919, 3637502659]


def reference_draws(values: list[float], probs: list[float], seed: int, n: int) -> list[float]:
    g = Pcg32(seed)
    out = []
    for _ in range(n):
        u = g.next() / 2**32
        c = 0.0
        pick = values[-1]
        for v, p in zip(values, probs, strict=True):
            c += p
            if c >= u:
                pick = v
                break
        out.append(pick)
    return out


@pytest.mark.parametrize("seed", [None, 0, 42, 7])
def test_pmf_sample_seed_is_rng_seed_plus_position(seed: int | None) -> None:
    vals, probs = [0, 1, 2], [0.7, 0.2, 0.1]
    nodes = [
        const("a", [0] * 40),
        const("b", [0] * 40),
        {"id": "s", "kind": "pmf", "pmf": {"values": vals, "probabilities": probs, "sample": True}},
        {"id": "t", "kind": "pmf", "pmf": {"values": [5, 6], "probabilities": [0.5, 0.5], "sample": True}},
    ]
    extra = {} if seed is None else {"rng": {"kind": "pcg32", "seed": seed}}
    out = run(model(nodes, 40, **extra))
    base = 0 if seed is None else seed
    expected_s = reference_draws(vals, probs, base + 2, 40)
    same(out["s"], expected_s)
    same(out["t"], reference_draws([5, 6], [0.5, 0.5], base + 3, 40))
    assert set(expected_s) == {0, 1, 2}  # 40 draws hit every value at these seeds


def test_pmf_sample_known_draws_seed_42() -> None:
    # Pcg32(42) outputs / 2^32 = 0.459, 0.056, 0.805, 0.847 → cumulative [0.7, 0.9, 1.0]
    nodes = [{"id": "s", "kind": "pmf", "pmf": {"values": [0, 1, 2], "probabilities": [0.7, 0.2, 0.1], "sample": True}}]
    out = run(model(nodes, 4, rng={"kind": "pcg32", "seed": 42}))
    same(out["s"], [0, 0, 1, 1])


# -- serviceWithBuffer ----------------------------------------------------------------------------


def queue_model(q: dict[str, Any], bins: int, **series: list[float]) -> dict[str, np.ndarray]:
    nodes = [const(k, v) for k, v in series.items()]
    nodes.append({"id": "q", "kind": "serviceWithBuffer", **q})
    return run(model(nodes, bins))


def test_queue_initial_and_loss() -> None:
    out = queue_model(
        {"inflow": "i", "outflow": "o", "loss": "l", "initial": 2},
        4,
        i=[10, 10, 10, 10],
        o=[4, 4, 4, 4],
        l=[1, 1, 1, 1],
    )
    same(out["q"], [7, 12, 17, 22])
    same(out["q_outflow"], [4, 4, 4, 4])
    same(out["q_overflow"], [0, 0, 0, 0])


def test_queue_never_negative_and_non_finite_inputs_count_zero() -> None:
    out = queue_model({"inflow": "i", "outflow": "o", "initial": 3}, 5, i=[0, NAN, INF, 5, -INF], o=[5, 0, 0, 1, NAN])
    same(out["q"], [0, 0, 0, 4, 4])
    same(out["q_outflow"], [5, 0, 0, 1, 0])


def test_queue_missing_inflow_outflow_loss_count_zero() -> None:
    out = queue_model({"initial": 4}, 3, x=[1, 2, 3])
    same(out["q"], [4, 4, 4])
    out = queue_model({"outflow": "x", "initial": 4}, 3, x=[1, 2, 3])
    same(out["q"], [3, 1, 0])


def test_queue_wip_limit_number() -> None:
    out = queue_model(
        {"inflow": "i", "outflow": "o", "loss": "l", "initial": 2, "wipLimit": 15},
        4,
        i=[10, 10, 10, 10],
        o=[4, 4, 4, 4],
        l=[1, 1, 1, 1],
    )
    same(out["q"], [7, 12, 15, 15])
    same(out["q_overflow"], [0, 0, 2, 5])


def test_queue_wip_limit_series_wins_and_nan_means_no_limit() -> None:
    series = {"i": [10, 10, 10, 10], "o": [4, 4, 4, 4], "l": [1, 1, 1, 1], "lim": [100, 10, NAN, 5]}
    for q in ({"wipLimitSeries": "lim"}, {"wipLimitSeries": "lim", "wipLimit": 1}):
        out = queue_model({"inflow": "i", "outflow": "o", "loss": "l", "initial": 2, **q}, 4, **series)
        # 2+5=7 (≤100); 12>10 → 10, ovf 2; NaN → 15; 20>5 → 5, ovf 15
        same(out["q"], [7, 10, 15, 5])
        same(out["q_overflow"], [0, 2, 0, 15])


def test_queue_wip_overflow_loss_is_dropped() -> None:
    out = queue_model({"inflow": "i", "wipLimit": 3, "wipOverflow": "loss"}, 3, i=[5, 5, 0])
    same(out["q"], [3, 3, 3])
    same(out["q_overflow"], [2, 5, 0])


def test_overflow_joins_another_queue() -> None:
    nodes = [
        const("i", [8, 8, 8]),
        const("o", [2, 2, 2]),
        {"id": "a", "kind": "serviceWithBuffer", "inflow": "i", "wipLimit": 4, "wipOverflow": "b"},
        {"id": "b", "kind": "serviceWithBuffer", "inflow": "o", "outflow": "o"},
    ]
    out = run(model(nodes, 3))
    same(out["a"], [4, 4, 4])
    same(out["a_overflow"], [4, 8, 8])
    same(out["b"], [4, 12, 20])  # joins b's own inflow (2) in the same bin, minus b's outflow 2


def test_cascading_overflow_a_b_c() -> None:
    nodes = [
        const("in_a", [20] * 4),
        const("out_a", [5] * 4),
        const("out_b", [2] * 4),
        const("out_c", [1] * 4),
        {
            "id": "A",
            "kind": "serviceWithBuffer",
            "inflow": "in_a",
            "outflow": "out_a",
            "wipLimit": 10,
            "wipOverflow": "B",
        },
        {"id": "B", "kind": "serviceWithBuffer", "outflow": "out_b", "wipLimit": 5, "wipOverflow": "C"},
        {"id": "C", "kind": "serviceWithBuffer", "outflow": "out_c"},
    ]
    out = run(model(nodes, 4))
    # A: 15→10 ovf 5; 25→10 ovf 15; ...
    same(out["A"], [10, 10, 10, 10])
    same(out["A_outflow"], [5, 5, 5, 5])
    same(out["A_overflow"], [5, 15, 15, 15])
    # B: 0+5-2=3; 3+15-2=16→5 ovf 11; 5+15-2=18→5 ovf 13; again
    same(out["B"], [3, 5, 5, 5])
    same(out["B_overflow"], [0, 11, 13, 13])
    # C: 0+0-1→0; 0+11-1=10; 10+13-1=22; 22+13-1=34
    same(out["C"], [0, 10, 22, 34])
    same(out["C_overflow"], [0, 0, 0, 0])


def test_overflow_cycle_is_error() -> None:
    nodes = [
        const("i", [1, 1]),
        {"id": "a", "kind": "serviceWithBuffer", "inflow": "i", "wipLimit": 1, "wipOverflow": "b"},
        {"id": "b", "kind": "serviceWithBuffer", "inflow": "i", "wipLimit": 1, "wipOverflow": "a"},
    ]
    with pytest.raises(ModelError) as info:
        compile_model(load_graph(model(nodes, 2)))
    assert "'a'" in str(info.value) and "'b'" in str(info.value)


def test_overflow_to_non_queue_is_error() -> None:
    nodes = [
        const("i", [1, 1]),
        {"id": "a", "kind": "serviceWithBuffer", "inflow": "i", "wipLimit": 1, "wipOverflow": "i"},
    ]
    with pytest.raises(ModelError, match=r"'a'.*wipOverflow"):
        load_graph(model(nodes, 2))


# -- dispatch schedule ------------------------------------------------------------------------------


def dispatch_run(schedule: dict[str, Any], cap: list[float] | None = None) -> dict[str, np.ndarray]:
    series = {"arr": [10] * 6, "srv": [5] * 6}
    if cap is not None:
        series["cap"] = cap
    return queue_model({"inflow": "arr", "outflow": "srv", "dispatchSchedule": schedule}, 6, **series)


def test_dispatch_upstream_fixture() -> None:
    out = dispatch_run({"kind": "time-based", "periodBins": 3, "phaseOffset": 0})
    same(out["q"], [5, 15, 25, 30, 40, 50])
    same(out["q_outflow"], [5, 0, 0, 5, 0, 0])


def test_dispatch_phase_and_floored_phase() -> None:
    for phase in (1, 4, -2):  # 4 mod 3 = 1, -2 mod 3 = 1
        out = dispatch_run({"periodBins": 3, "phaseOffset": phase})
        same(out["q_outflow"], [0, 5, 0, 0, 5, 0])
        same(out["q"], [10, 15, 25, 35, 40, 50])
    out = dispatch_run({"kind": "periodic", "periodBins": 2, "phaseOffset": -1})  # -1 mod 2 = 1
    same(out["q_outflow"], [0, 5, 0, 5, 0, 5])


def test_dispatch_capacity_series() -> None:
    out = dispatch_run({"periodBins": 3, "capacitySeries": "cap"}, cap=[3, 0, 0, 100, 1, 1])
    same(out["q_outflow"], [3, 0, 0, 5, 0, 0])
    same(out["q"], [7, 17, 27, 32, 42, 52])
    out = dispatch_run({"periodBins": 1, "capacitySeries": "cap"}, cap=[3, NAN, 0, 100, 1, INF])
    same(out["q_outflow"], [3, 0, 0, 5, 1, 0])  # non-finite capacity counts 0


def test_dispatch_bad_kind_is_error() -> None:
    with pytest.raises(ModelError, match=r"node 'q'.*dispatchSchedule.kind"):
        queue_model({"inflow": "a", "dispatchSchedule": {"kind": "random", "periodBins": 2}}, 2, a=[1, 1])


# -- topology queues ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("HTTPService", "http_service"),
        ("QueueA", "queue_a"),
        ("Service2A", "service2_a"),
        ("API_Gateway", "api_gateway"),
        ("OrderService", "order_service"),
        ("my-svc.v2", "my_svc_v2"),
        ("already_snake", "already_snake"),
        ("ABC", "abc"),
        ("a__b", "a_b"),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


def topo_model(topo_nodes: list[dict[str, Any]], bins: int = 3, **series: list[float]) -> dict[str, Any]:
    return model([const(k, v) for k, v in series.items()], bins, topology={"nodes": topo_nodes})


@pytest.mark.parametrize("tid", ["HTTPService", "QueueA", "Service2A", "API_Gateway"])
@pytest.mark.parametrize("depth", [None, "self"])
def test_synthesized_queue_names(tid: str, depth: str | None) -> None:
    sem: dict[str, Any] = {"arrivals": "arr", "served": "srv"}
    if depth:
        sem["queueDepth"] = depth
    out = run(
        topo_model([{"id": tid, "kind": "serviceWithBuffer", "semantics": sem}], arr=[10, 10, 10], srv=[4, 4, 20])
    )
    s = snake_case(tid)
    same(out[f"{s}_queue"], [6, 12, 2])
    same(out[f"{s}_outflow"], [4, 4, 20])
    same(out[f"{s}_overflow"], [0, 0, 0])


def test_queue_depth_naming_missing_series_uses_that_name() -> None:
    out = run(
        topo_model(
            [
                {
                    "id": "OrderQueue",
                    "kind": "queue",
                    "semantics": {"arrivals": "arr", "capacity": "cap", "errors": "err", "queueDepth": "backlog"},
                    "initialCondition": {"queueDepth": 5},
                }
            ],
            arr=[10, 10, 10],
            cap=[3, 3, 3],
            err=[1, 0, 2],
        )
    )
    # outflow = capacity (no served), loss = errors, initial 5: 5+10-3-1=11, 18, 23
    same(out["backlog"], [11, 18, 23])
    same(out["order_queue_outflow"], [3, 3, 3])
    assert "order_queue_queue" not in out


def test_queue_depth_naming_existing_series_is_not_synthesized() -> None:
    graph = load_graph(
        topo_model(
            [{"id": "Q", "kind": "queue", "semantics": {"arrivals": "arr", "queueDepth": "depth"}}],
            arr=[1, 1, 1],
            depth=[0, 0, 0],
        )
    )
    ids = {out for d in graph.defs for out in d.outputs}
    assert "q_queue" not in ids and "q_outflow" not in ids
    assert graph.topo[0].fields["queueDepth"] == "depth"


def test_service_kind_gets_no_queue() -> None:
    graph = load_graph(topo_model([{"id": "Svc", "kind": "service", "semantics": {"arrivals": "arr"}}], arr=[1, 1, 1]))
    assert "svc_queue" not in {out for d in graph.defs for out in d.outputs}


def test_dlq_fed_by_overflow_alone_and_topology_config() -> None:
    topo = [
        {
            "id": "FrontQueue",
            "kind": "queue",
            "semantics": {"arrivals": "arr", "served": "srv"},
            "initialCondition": {"queueDepth": 2},
            "wipLimit": 10,
            "wipOverflow": "DeadLetters",
        },
        {"id": "DeadLetters", "kind": "dlq", "semantics": {}},
    ]
    out = run(topo_model(topo, 4, arr=[10, 10, 10, 10], srv=[3, 3, 3, 3]))
    # front: 2+10-3=9; 16→10 ovf 6; 17→10 ovf 7; ovf 7
    same(out["front_queue_queue"], [9, 10, 10, 10])
    same(out["front_queue_overflow"], [0, 6, 7, 7])
    same(out["dead_letters_queue"], [0, 6, 13, 20])


def test_topology_wip_series_and_dispatch() -> None:
    topo = [
        {
            "id": "Batch",
            "kind": "serviceWithBuffer",
            "semantics": {"arrivals": "arr", "served": "srv"},
            "wipLimitSeries": "lim",
            "dispatchSchedule": {"periodBins": 2, "phaseOffset": 1},
        }
    ]
    out = run(topo_model(topo, 4, arr=[10, 10, 10, 10], srv=[8, 8, 8, 8], lim=[NAN, 5, 100, 100]))
    same(out["batch_outflow"], [0, 8, 0, 8])
    same(out["batch_queue"], [10, 5, 15, 17])  # 10; 10+10-8=12→5 ovf 7; 15; 17
    same(out["batch_overflow"], [0, 7, 0, 0])


def test_synthesized_id_collision_is_error() -> None:
    m = topo_model(
        [{"id": "HTTPService", "kind": "queue", "semantics": {"arrivals": "arr"}}],
        arr=[1, 1, 1],
        http_service_outflow=[0, 0, 0],
    )
    with pytest.raises(ModelError, match=r"topology node 'HTTPService'.*collides"):
        load_graph(m)


def test_topology_unknown_series_is_error() -> None:
    m = topo_model([{"id": "Svc", "kind": "service", "semantics": {"arrivals": "arivals"}}], arr=[1, 1, 1])
    with pytest.raises(ModelError, match=r"topology node 'Svc': semantics.arrivals: unknown series 'arivals'"):
        load_graph(m)


# -- retry echo -------------------------------------------------------------------------------------


def echo(sem: dict[str, Any], bins: int, **series: list[float]) -> tuple[ModelGraph, dict[str, np.ndarray]]:
    m = topo_model([{"id": "Svc", "kind": "service", "semantics": {"retryEcho": "echo", **sem}}], bins, **series)
    return load_graph(m), run(m)


def test_retry_echo_default_kernel() -> None:
    _, out = echo({"errors": "err"}, 5, err=[10] * 5)
    same(out["echo"], [0, 6, 9, 10, 10])
    _, out = echo({"errors": "err"}, 5, err=[10, 0, 0, 0, 0])
    same(out["echo"], [0, 6, 3, 1, 0])


def test_retry_echo_prefers_failures_over_errors() -> None:
    _, out = echo({"errors": "err", "failures": "fail", "retryKernel": [0, 1]}, 3, err=[5, 5, 5], fail=[1, 2, 3])
    same(out["echo"], [0, 1, 2])


def test_retry_echo_kernel_scaled_down_when_sum_exceeds_one() -> None:
    _, out = echo({"errors": "err", "retryKernel": [1, 3]}, 3, err=[4, 8, 0])  # → [0.25, 0.75]
    same(out["echo"], [1, 5, 6])
    _, out = echo({"errors": "err", "retryKernel": [0.5, 0.25]}, 3, err=[4, 8, 0])  # sum < 1: as is
    same(out["echo"], [2, 5, 2])


def test_retry_echo_kernel_truncated_to_32_taps() -> None:
    # tap 32 is dropped before the sum check: what is left sums to 0.5, so no scaling either
    kernel = [0.5] + [0.0] * 31 + [100.0]
    _, out = echo({"errors": "err", "retryKernel": kernel}, 34, err=[2.0] + [0.0] * 33)
    same(out["echo"], [1.0] + [0.0] * 33)


def test_retry_echo_without_failures_or_errors_is_error() -> None:
    with pytest.raises(ModelError, match=r"topology node 'Svc': semantics.retryEcho"):
        echo({"arrivals": "arr"}, 3, arr=[1, 1, 1])


def test_retry_echo_naming_existing_series_is_used_as_is() -> None:
    graph, out = echo({"errors": "err"}, 3, err=[10, 10, 10], echo=[7, 7, 7])
    same(out["echo"], [7, 7, 7])
    assert graph.topo[0].fields["retryEcho"] == "echo"


# -- constraints --------------------------------------------------------------------------------------


def constraint_model(da: list[float], db: list[float], cap: list[float]) -> dict[str, Any]:
    topo = {
        "nodes": [
            {
                "id": "ServiceA",
                "kind": "serviceWithBuffer",
                "semantics": {"arrivals": "da", "served": "srv"},
                "constraints": ["db"],
            },
            {
                "id": "ServiceB",
                "kind": "serviceWithBuffer",
                "semantics": {"arrivals": "dbb", "served": "srv"},
                "constraints": ["db"],
            },
        ],
        "constraints": [{"id": "db", "semantics": {"served": "cap", "arrivals": "not_a_series"}}],
    }
    n = len(da)
    return model([const("da", da), const("dbb", db), const("cap", cap), const("srv", [0] * n)], n, topology=topo)


def test_constraint_caps_proportionally() -> None:
    out = run(constraint_model([60, 30, NAN, -5, 30], [60, 30, 20, 10, 90], [80, 80, 15, 80, 60]))
    # bin0: D=120 > 80 → 40 each; bin1: D=60 ≤ 80 unchanged; bin2: A counts 0, D=20 > 15 → 0 and 15;
    # bin3: D=10 ≤ 80 → unchanged (raw); bin4: D=120 > 60 → 15, 45
    same(out["service_a_capped_db"], [40, 30, 0, -5, 15])
    same(out["service_b_capped_db"], [40, 30, 15, 10, 45])
    # the queues take the capped inflow (non-finite/negative inflow handled by the queue)
    same(out["service_a_queue"], [40, 70, 70, 65, 80])
    same(out["service_b_queue"], [40, 70, 85, 95, 140])


def test_constraint_below_capacity_unchanged() -> None:
    out = run(constraint_model([10, 20, 30], [5, 6, 7], [100, 100, 100]))
    same(out["service_a_capped_db"], [10, 20, 30])
    same(out["service_b_capped_db"], [5, 6, 7])


def test_constraint_unknown_id_and_two_constraints_are_errors() -> None:
    m = constraint_model([1], [1], [1])
    m["topology"]["nodes"][0]["constraints"] = ["nope"]
    with pytest.raises(ModelError, match="topology node 'ServiceA': constraints: unknown constraint 'nope'"):
        load_graph(m)
    m["topology"]["nodes"][0]["constraints"] = ["db", "db2"]
    with pytest.raises(ModelError, match="topology node 'ServiceA': constraints"):
        load_graph(m)


# -- routers ----------------------------------------------------------------------------------------


def test_router_weights_split_input() -> None:
    nodes = [
        const("served", [10, 20, 0, 5]),
        {
            "id": "split",
            "kind": "router",
            "inputs": {"queue": "served"},
            "routes": [{"target": "fast", "weight": 0.7}, {"target": "slow", "weight": 0.3}],
        },
    ]
    out = run(model(nodes, 4))
    same(out["split"], [10, 20, 0, 5])
    same(out["fast"], [7, 14, 0, 3.5])
    same(out["slow"], [3, 6, 0, 1.5])


def test_router_weights_are_proportional_and_zero_total_gives_zero() -> None:
    nodes = [
        const("x", [8, 16]),
        {
            "id": "r",
            "kind": "router",
            "inputs": {"queue": "x"},
            "routes": [{"target": "p", "weight": 1}, {"target": "q", "weight": 3}],
        },
        {
            "id": "z",
            "kind": "router",
            "inputs": {"queue": "x"},
            "routes": [{"target": "none1", "weight": 0}, {"target": "none2", "weight": 0}],
        },
    ]
    out = run(model(nodes, 2))
    same(out["p"], [2, 4])
    same(out["q"], [6, 12])
    same(out["none1"], [0, 0])
    same(out["none2"], [0, 0])


def test_routes_to_one_target_add_up_across_routers() -> None:
    nodes = [
        const("a", [8, 8, 4]),
        const("b", [4, 12, 0]),
        {
            "id": "r1",
            "kind": "router",
            "inputs": {"queue": "a"},
            "routes": [{"target": "t", "weight": 1}, {"target": "t", "weight": 1}],
        },
        {
            "id": "r2",
            "kind": "router",
            "inputs": {"queue": "b"},
            "routes": [{"target": "t", "weight": 1}, {"target": "u", "weight": 3}],
        },
        {"id": "use", "kind": "expr", "expr": "SHIFT(t, 1)"},
    ]
    out = run(model(nodes, 3))
    same(out["t"], [9, 11, 4])  # a/2 + a/2 + b/4
    same(out["u"], [3, 9, 0])
    same(out["use"], [0, 9, 11])


def test_router_target_naming_existing_series_is_error() -> None:
    nodes = [
        const("a", [1, 1]),
        const("b", [1, 1]),
        {"id": "r", "kind": "router", "inputs": {"queue": "a"}, "routes": [{"target": "b", "weight": 1}]},
    ]
    with pytest.raises(ModelError, match="router target 'b': names an existing series"):
        load_graph(model(nodes, 2))


def test_router_nested_upstream_form() -> None:
    nodes = [
        const("served", [10, 20]),
        {
            "id": "split",
            "kind": "router",
            "router": {
                "inputs": {"queue": "served"},
                "routes": [{"target": "left", "weight": 1}, {"target": "right", "weight": 4}],
            },
        },
    ]
    out = run(model(nodes, 2))
    same(out["left"], [2, 4])
    same(out["right"], [8, 16])


def test_route_without_weight_carries_zero_with_info() -> None:
    nodes = [
        const("x", [10, 20]),
        {
            "id": "r",
            "kind": "router",
            "inputs": {"queue": "x"},
            "routes": [{"target": "w", "weight": 2}, {"target": "cls", "classes": ["gold"]}],
        },
    ]
    graph = load_graph(model(nodes, 2))
    assert [i["code"] for i in graph.info] == ["route_without_weight"]
    out = run(model(nodes, 2))
    same(out["w"], [10, 20])
    same(out["cls"], [0, 0])


# -- loops closed through SHIFT ------------------------------------------------------------------------


def test_feedback_arrivals_throttled_by_previous_queue() -> None:
    nodes = [
        const("demand", [50, 50, 50, 50, 50]),
        const("srv", [20, 20, 20, 60, 20]),
        {"id": "arr", "kind": "expr", "expr": "MIN(demand, 100 - SHIFT(q, 1))"},
        {"id": "q", "kind": "serviceWithBuffer", "inflow": "arr", "outflow": "srv", "initial": 10},
    ]
    out = run(model(nodes, 5))
    # t0: min(50, 90)=50, q=10+50-20=40; t1: min(50, 60)=50, q=70; t2: min(50, 30)=30, q=80;
    # t3: min(50, 20)=20, q=80+20-60=40; t4: min(50, 60)=50, q=70
    same(out["arr"], [50, 50, 30, 20, 50])
    same(out["q"], [40, 70, 80, 40, 70])


def test_feedback_through_topology_queue() -> None:
    m = model(
        [
            const("demand", [50, 50, 50]),
            const("srv", [20, 20, 20]),
            {"id": "arr", "kind": "expr", "expr": "MIN(demand, 60 - SHIFT(gate_queue, 1))"},
        ],
        3,
        topology={
            "nodes": [
                {
                    "id": "Gate",
                    "kind": "queue",
                    "semantics": {"arrivals": "arr", "served": "srv"},
                    "initialCondition": {"queueDepth": 30},
                }
            ]
        },
    )
    out = run(m)
    # t0: min(50, 30)=30, q=30+30-20=40; t1: 20, q=40; t2: 20, 40
    same(out["arr"], [30, 20, 20])
    same(out["gate_queue"], [40, 40, 40])


def test_self_shift_backlog_with_initial() -> None:
    nodes = [
        const("a", [10, 0, 10, 0]),
        const("s", [8, 8, 8, 8]),
        {"id": "backlog", "kind": "expr", "expr": "MAX(0, SHIFT(backlog, 1) + a - s)", "initial": 5},
    ]
    out = run(model(nodes, 4))
    same(out["backlog"], [7, 0, 2, 0])


def test_two_node_loop_through_shift2() -> None:
    nodes = [
        const("a", [1, 1, 1, 1, 1]),
        {"id": "x", "kind": "expr", "expr": "a + SHIFT(y, 2)"},
        {"id": "y", "kind": "expr", "expr": "x * 2", "initial": 1},
    ]
    out = run(model(nodes, 5))
    # x0 = 1+1=2, y0=4; x1 = 2, y1 = 4; x2 = 1+4=5, y2=10; x3 = 5, y3 = 10; x4 = 11, y4 = 22
    same(out["x"], [2, 2, 5, 5, 11])
    same(out["y"], [4, 4, 10, 10, 22])
