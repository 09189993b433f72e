"""Upstream node forms (SPEC §13): sources, profiles, pmf policy and renormalization, legacy fields,
outputs patterns, grid.binMinutes, CONV with a number, default route weights. Every number by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from compat_support import close, codes, evaluate, model, write_csv

from engine_live.errors import ModelError
from engine_live.model.build import load_graph
from engine_live.model.profiles import builtin_weights
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch


def const(nid: str, values: object, **extra: object) -> dict[str, object]:
    return {"id": nid, "kind": "const", "values": values, **extra}


def errors_of(m: dict[str, Any], base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ModelError) as info:
        load_graph(m, base_dir=base_dir)
    return info.value.errors


# -- sources ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["file:", "file://"])
def test_a_file_source_on_a_const_or_pmf_reads_its_csv_and_wins_over_values(tmp_path: Path, prefix: str) -> None:
    write_csv(tmp_path / "d.csv", [4, 5, 6])
    nodes = [
        const("a", [1, 1, 1], source=f"{prefix}d.csv"),
        {"id": "p", "kind": "pmf", "source": f"{prefix}d.csv", "pmf": {"values": [1], "probabilities": [1]}},
    ]
    graph, out = evaluate(model(nodes), base_dir=tmp_path)
    close(out["a"], [4, 5, 6])
    close(out["p"], [4, 5, 6])
    assert codes(graph) == ["source_overrides_values", "source_overrides_values"]


@pytest.mark.parametrize("empty", ["", None])
def test_an_empty_source_means_none_and_the_values_count(empty: str | None) -> None:
    nodes = [
        const("a", [1, 2, 3], source=empty),
        {"id": "p", "kind": "pmf", "source": empty, "pmf": {"values": [2, 4], "probabilities": [0.5, 0.5]}},
    ]
    graph, out = evaluate(model(nodes))
    close(out["a"], [1, 2, 3])
    close(out["p"], [3, 3, 3])  # 2·0.5 + 4·0.5
    assert codes(graph) == []


def test_a_telemetry_source_on_a_pmf_makes_a_live_fed_series() -> None:
    pmf = {"id": "p", "kind": "pmf", "source": "telemetry", "pmf": {"values": [1], "probabilities": [1]}}
    graph = load_graph(model([pmf]))
    assert graph.telemetry_ids() == ("p",)


def test_one_number_fills_every_bin() -> None:
    close(evaluate(model([const("a", 7)], 4))[1]["a"], [7, 7, 7, 7])


# -- profiles --------------------------------------------------------------------------------------


def test_builtin_profile_weights_follow_upstreams_definition() -> None:
    # 288 bins: no resampling; hour h's weight is h / average of the 24 hourly weights.
    # three-shift's hourly weights sum to 23.78, so hour 0 (0.9) weighs 0.9 · 24 / 23.78.
    weights = builtin_weights("three-shift", 288)
    close(weights[:12], [0.9 * 24 / 23.78] * 12)
    close([weights[12 * 11]], [1.15 * 24 / 23.78])
    # 2 bins: position i/2 · 287 → bin 0 reads weight 0 (hour 0: 0.9), bin 1 sits halfway between
    # weights 143 (hour 11: 1.15) and 144 (hour 12: 1.12): 1.135; normalized over the two: / 1.0175.
    close(builtin_weights("THREE-SHIFT", 2), [0.9 / 1.0175, 1.135 / 1.0175])


def test_profiles_shape_pmf_and_const_values() -> None:
    nodes = [
        {
            "id": "p",
            "kind": "pmf",
            "pmf": {"values": [50, 150], "probabilities": [0.5, 0.5], "policy": "repeat"},
            "profile": {"kind": "builtin", "name": "three-shift"},
        },
        const("c", [100, 100], profile={"name": "three-shift"}),  # kind defaults to builtin
        const("i", [10, 10], profile={"kind": "inline", "weights": [1, 3]}),  # average 2 → 0.5, 1.5
    ]
    _, out = evaluate(model(nodes, 2))
    close(out["p"], [100 * 0.9 / 1.0175, 100 * 1.135 / 1.0175])  # μ = 100
    close(out["c"], [100 * 0.9 / 1.0175, 100 * 1.135 / 1.0175])
    close(out["i"], [5, 15])


@pytest.mark.parametrize(
    ("profile", "fragment"),
    [
        ({"kind": "builtin", "name": "lunch-rush"}, "unknown builtin profile 'lunch-rush'"),
        ({"kind": "inline", "weights": [1, 2, 3]}, "expected exactly 2 numbers (grid.bins), got 3"),
        ({"kind": "inline", "weights": [1, -1]}, "finite numbers >= 0"),
        ({"kind": "inline", "weights": [0, 0]}, "positive average"),
        ({"kind": "curve"}, "kind: must be builtin or inline"),
        ({"name": "three-shift", "scale": 2}, "unknown key 'scale'"),
    ],
)
def test_bad_profiles_are_errors(profile: dict[str, object], fragment: str) -> None:
    errs = errors_of(model([const("c", [1, 1], profile=profile)], 2))
    assert len(errs) == 1 and errs[0].startswith("node 'c': profile: ") and fragment in errs[0], errs


def test_a_sampled_pmf_takes_no_profile() -> None:
    pmf = {"id": "p", "kind": "pmf", "pmf": {"values": [1], "probabilities": [1], "sample": True}, "profile": {}}
    assert errors_of(model([pmf])) == ["node 'p': profile shapes a pmf's expected value: drop sample or profile"]


# -- pmf -------------------------------------------------------------------------------------------


def test_pmf_probabilities_are_renormalized_with_a_warning() -> None:
    pmf = {"id": "p", "kind": "pmf", "pmf": {"values": [0, 10], "probabilities": [1, 3]}}  # → 0.25, 0.75
    graph, out = evaluate(model([pmf]))
    close(out["p"], [7.5, 7.5, 7.5])
    (warning,) = graph.info
    assert (warning["code"], warning["severity"], warning["nodeId"]) == ("pmf_renormalized", "warning", "p")
    assert "sum to 4.0" in warning["message"]


def test_pmf_policy_must_be_upstreams() -> None:
    pmf = {"id": "p", "kind": "pmf", "pmf": {"values": [1], "probabilities": [1], "policy": "resample"}}
    assert errors_of(model([pmf])) == ["node 'p': pmf.policy: must be one of repeat, error, got 'resample'"]


# -- legacy fields ---------------------------------------------------------------------------------


def test_expression_is_expr_and_dependencies_are_ignored() -> None:
    nodes = [const("a", [1, 2, 3]), {"id": "b", "kind": "expr", "expression": "a * 2", "dependencies": ["a"]}]
    graph, out = evaluate(model(nodes))
    close(out["b"], [2, 4, 6])
    assert codes(graph) == ["legacy_field", "legacy_field"]
    assert all(w["nodeId"] == "b" and w["severity"] == "info" for w in graph.info)


def test_legacy_forms_still_rejected_say_what_to_write() -> None:
    both = {"id": "b", "kind": "expr", "expr": "1", "expression": "2"}
    assert errors_of(model([both])) == [
        "node 'b': give expr: or expression:, not both (expression: is upstream's legacy spelling)"
    ]
    assert errors_of(model([{"id": "f", "kind": "expr", "formula": "1"}]))[0] == (
        "node 'f': unknown key 'formula' — write expr:"
    )
    assert errors_of(model([const("c", [1, 1, 1], expression="2")])) == [
        "node 'c': unknown key 'expression' — expression: belongs to expr nodes — write kind: expr and expr:"
    ]
    assert errors_of(model([const("c", [1, 1, 1])], seed=1)) == [
        "model: unknown key 'seed' — write rng: {kind: pcg32, seed: <integer>}"
    ]


def test_bin_minutes_is_bin_size_in_minutes() -> None:
    m = {"grid": {"bins": 2, "binMinutes": 60}, "nodes": [const("a", [1, 2])]}
    graph = load_graph(m)
    assert (graph.grid.bin_size, graph.grid.bin_unit, graph.grid.bin_minutes) == (60, "minutes", 60)
    assert codes(graph) == ["legacy_field"]
    m["grid"] = {"bins": 2, "binMinutes": 60, "binSize": 1, "binUnit": "hours"}
    assert errors_of(m) == ["grid: give binMinutes or binSize and binUnit, not both"]


def test_conv_with_a_number_is_a_one_tap_kernel() -> None:
    nodes = [const("a", [2, 4, 6]), {"id": "b", "kind": "expr", "expr": "CONV(a, 0.5) + conv(a, -1)"}]
    close(evaluate(model(nodes))[1]["b"], [-1, -2, -3])  # a/2 - a


def test_backlog_is_a_service_with_buffer() -> None:
    nodes = [
        const("i", [10, 10, 10]),
        const("o", [3, 3, 3]),
        {"id": "q", "kind": "backlog", "inflow": "i", "outflow": "o"},
    ]
    close(evaluate(model(nodes))[1]["q"], [7, 14, 21])


# -- routers ---------------------------------------------------------------------------------------


def test_routes_without_weight_or_classes_take_weight_one() -> None:
    router = {
        "id": "r",
        "kind": "router",
        "inputs": {"queue": "x"},
        "routes": [{"target": "a", "weight": 2}, {"target": "b"}, {"target": "c"}],
    }
    graph, out = evaluate(model([const("x", [100, 40, 0]), router]))
    close(out["a"], [50, 20, 0])  # 2 of 4
    close(out["b"], [25, 10, 0])
    close(out["c"], [25, 10, 0])
    assert codes(graph) == ["router_default_weight", "router_default_weight"]


def test_a_router_target_naming_an_existing_series_says_what_to_do() -> None:
    router = {"id": "r", "kind": "router", "inputs": {"queue": "x"}, "routes": [{"target": "y", "weight": 1}]}
    nodes = [const("x", [1, 1, 1]), const("w", [1, 1, 1]), {"id": "y", "kind": "expr", "expr": "w * 2"}, router]
    (err,) = errors_of(model(nodes))
    assert err.startswith("router target 'y': names an existing series — ") and "remove the node 'y'" in err


def test_a_route_replaces_a_legacy_percentage_split_of_its_input() -> None:
    """Upstream's routers override `expr: "x * 0.5"` splits of their input (supply-chain-multi-tier-classes)."""
    router = {"id": "r", "kind": "router", "inputs": {"queue": "x"}, "routes": [{"target": "y", "weight": 1}]}
    graph, out = evaluate(model([const("x", [2, 4, 6]), {"id": "y", "kind": "expr", "expr": "x * 0.5"}, router]))
    close(out["y"], [2, 4, 6])
    assert [w["code"] for w in graph.info] == ["router_target_override"]


@pytest.mark.parametrize("placeholder", [const("y", [0, 0, 0]), {"id": "y", "kind": "expr", "expr": "0"}])
def test_a_route_into_an_upstream_placeholder_node_fills_it(placeholder: dict[str, object]) -> None:
    """Upstream's class templates declare route targets as `expr: "0"` nodes the router fills."""
    router = {
        "id": "r",
        "kind": "router",
        "inputs": {"queue": "x"},
        "routes": [{"target": "y", "weight": 1}, {"target": "z", "weight": 3}],
    }
    graph = load_graph(model([const("x", [4, 8, 2]), placeholder, router]))
    assert [w["code"] for w in graph.info] == ["router_target_placeholder"]
    V = evaluate_batch(plan := compile_model(graph))
    assert V[plan.row["y"]].tolist() == [1.0, 2.0, 0.5] and V[plan.row["z"]].tolist() == [3.0, 6.0, 1.5]


# -- outputs ---------------------------------------------------------------------------------------


def outputs_of(outputs: list[dict[str, object]]) -> tuple[tuple[str, str | None], ...] | None:
    nodes = [const("demand_a", [1, 1]), const("demand_b", [2, 2]), const("cap", [5, 5])]
    topology = {"nodes": [{"id": "Svc", "semantics": {"arrivals": "demand_a", "capacity": "telemetry"}}]}
    return load_graph(model(nodes, 2, topology=topology, outputs=outputs)).outputs


def test_output_patterns_and_legacy_entries() -> None:
    assert outputs_of([{"id": "x", "source": "cap", "filename": "c.csv"}]) == (("cap", "c.csv"),)
    assert outputs_of([{"series": "cap", "filename": "c.csv"}]) == (("cap", "c.csv"),)
    assert outputs_of([{"series": "demand*"}]) == (("demand_a", None), ("demand_b", None))
    assert outputs_of([{"series": "Svc/*"}]) == (("demand_a", None), ("Svc.capacity", None))
    everything = outputs_of([{"series": "cap", "as": "cap.csv"}, {"series": "*", "exclude": ["demand_b", "Svc/*"]}])
    assert everything == (("cap", "cap.csv"),)  # cap once, under its own name


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            {"series": "*", "as": "all.csv"},
            "outputs[0]: as: a pattern writes one file per series, so it takes no file name",
        ),
        ({"series": "a*b"}, "outputs[0]: series: a pattern is '*', '<prefix>*' or '<node>/*', got 'a*b'"),
        ({"series": "cap", "as": "a.csv", "filename": "b.csv"}, "outputs[0]: give as: or filename:, not both"),
        ({"series": "nope"}, "outputs: unknown series 'nope'"),
    ],
)
def test_bad_outputs(entry: dict[str, object], error: str) -> None:
    (err,) = errors_of(model([const("cap", [1, 1, 1])], outputs=[entry]))
    assert err.startswith(error), err


def test_output_patterns_are_bounded() -> None:
    outputs = [{"series": f"c{i}*"} for i in range(65)]
    assert errors_of(model([const("cap", [1, 1, 1])], outputs=outputs)) == ["outputs: at most 64 patterns, got 65"]
