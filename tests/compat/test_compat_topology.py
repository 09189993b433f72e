"""Topology as upstream writes it (SPEC §13): `null` semantics, labels and aliases kept and shown, every
upstream kind, `queue` / `external_demand` spellings — and two upstream fixtures' documented numbers
(mirrored in tests/compat/corpus, not copied): the order-system fixture with `null` semantics runs, and
the retry + service time fixture with its text policy fields matches its golden `/state_window`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from compat_support import CORPUS, close, evaluate, make_client, model, write_csv

from compat_api.cli.main import main
from engine_live.errors import ModelError
from engine_live.model.build import load_graph
from engine_live.plan.batch_run import topology_view


def const(nid: str, values: list[float]) -> dict[str, Any]:
    return {"id": nid, "kind": "const", "values": values}


def errors_of(m: dict[str, Any]) -> list[str]:
    with pytest.raises(ModelError) as info:
        load_graph(m)
    return info.value.errors


BASE = [const("a", [10, 10, 10]), const("s", [8, 8, 8]), const("c", [10, 10, 10])]


# -- order-system fixture (null semantics) ---------------------------------------------------------


def test_the_order_system_fixture_with_null_semantics_runs(tmp_path: Path) -> None:
    shutil.copy(CORPUS / "order_system" / "model.yaml", tmp_path / "model.yaml")
    for node, (arrivals, served, errors) in {"OrderService": (120, 118, 2), "PaymentService": (95, 94, 1)}.items():
        write_csv(tmp_path / f"{node}_arrivals.csv", [arrivals] * 288)
        write_csv(tmp_path / f"{node}_served.csv", [served] * 288)
        write_csv(tmp_path / f"{node}_errors.csv", [errors] * 288)
    graph, out = evaluate((tmp_path / "model.yaml").read_text(), base_dir=tmp_path)
    assert (graph.grid.bins, graph.grid.bin_minutes, graph.grid.start) == (288, 5, "2025-10-07T00:00:00Z")
    assert [(t.id, t.kind, sorted(t.fields)) for t in graph.topo] == [
        ("OrderService", "service", ["arrivals", "errors", "served"]),  # null externalDemand, queueDepth: absent
        ("PaymentService", "service", ["arrivals", "errors", "served"]),
    ]
    assert [(e.source, e.target, e.weight) for e in graph.edges] == [("OrderService", "PaymentService", 0.85)]
    close(out["OrderService.served"], [118] * 288)
    assert not any(name.endswith("_queue") for name in out)  # services get no queue
    assert main(["run", str(tmp_path / "model.yaml"), "--out", str(tmp_path / "run")]) == 0


# -- retry + service time fixture (golden state window) --------------------------------------------


def test_the_retry_service_time_fixture_matches_its_golden_state_window(tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    for csv in (CORPUS / "retry_service_time").glob("*.csv"):
        shutil.copy(csv, tmp_path / "inputs" / csv.name)
    text = (CORPUS / "retry_service_time" / "model.yaml").read_text()
    with make_client(tmp_path) as client:
        r = client.post("/v1/runs", json={"mode": "simulation", "model": text})
        assert r.status_code == 201, r.text
        run_id = r.json()["runId"]
        window = client.get(f"/v1/runs/{run_id}/state_window", params={"startBin": 0, "endBin": 3}).json()
        graph = client.get(f"/v1/runs/{run_id}/graph").json()
    order, support = window["nodes"]
    assert order["metrics"]["exhaustedFailures"] == [0, 0, 1, 1]
    assert order["metrics"]["retryBudgetRemaining"] == [3, 3, 2, 1]
    assert order["metrics"]["retryEcho"] == [0, 0.6, 0.9, 1]
    d = order["derived"]
    assert d["utilization"] == [0.75, 0.857143, 1, 1]  # served / capacity: 9/12, 6/7, 9/9, 4/4
    assert d["throughputRatio"] == [0.9, 0.6, 0.9, 0.4]  # served / arrivals
    assert d["retryTax"] == [0.1, 0.142857, 0.1, 0.2]  # 1/10, 1/7, 1/10, 1/5
    assert d["serviceTimeMs"] == [250, 300, 300, 300]  # processingTimeMsSum / servedCount
    assert support["metrics"]["queueDepth"] == [2, 10, 20, 0]
    assert support["derived"]["latencyMinutes"] == [1.111111, 8.333333, 11.111111, 0]  # queue / served · 5
    assert support["derived"]["throughputRatio"] == [1, 0.857143, 1, 0.8]
    # the text policy fields are labels, never series; aliases flow into state and graph
    labels = {"exhaustedPolicy": "dlq", "backoffStrategy": "linear", "maxAttempts": 4}
    aliases = {"attempts": "Ticket submissions", "served": "Orders fulfilled"}
    assert (order["labels"], order["aliases"]) == (labels, aliases)
    assert support["aliases"] == {"queueDepth": "Open backlog"}  # `Queue_Depth`: any case, underscores
    assert "labels" not in support
    by_id = {n["id"]: n for n in graph["nodes"]}
    assert (by_id["OrderService"]["labels"], by_id["OrderService"]["aliases"]) == (labels, aliases)


# -- semantics -------------------------------------------------------------------------------------


def test_null_semantics_mean_absent_and_labels_never_resolve() -> None:
    semantics = {
        "arrivals": "a",
        "served": "s",
        "capacity": None,
        "errors": None,
        "parallelism": None,
        "exhaustedPolicy": "returns",
        "backoffStrategy": None,
        "maxAttempts": 3.0,
        "aliases": {"SERVED": "Loads pulled", "retry_echo": "Retry backlog", "custom": "Kept as given"},
    }
    graph = load_graph(model(BASE, topology={"nodes": [{"id": "Svc", "kind": "service", "semantics": semantics}]}))
    (svc,) = graph.topo
    assert svc.fields == {"arrivals": "a", "served": "s"}
    assert svc.labels == {"exhaustedPolicy": "returns", "maxAttempts": 3}
    assert svc.aliases == {"served": "Loads pulled", "retryEcho": "Retry backlog", "custom": "Kept as given"}
    view = topology_view(graph)["nodes"][0]
    assert view["labels"] == svc.labels and view["aliases"] == svc.aliases


def test_upstream_spellings_of_semantics_keys() -> None:
    semantics = {"arrivals": "a", "served": "s", "queue": "c", "external_demand": "a"}
    (node,) = load_graph(model(BASE, topology={"nodes": [{"id": "Q", "kind": "queue", "semantics": semantics}]})).topo
    assert node.fields == {"arrivals": "a", "served": "s", "queueDepth": "c", "externalDemand": "a"}
    both = {"arrivals": "a", "queue": "c", "queueDepth": "c"}
    assert errors_of(model(BASE, topology={"nodes": [{"id": "Q", "semantics": both}]})) == [
        "topology node 'Q': semantics: queueDepth is given twice (as queue and queueDepth): give it once"
    ]


@pytest.mark.parametrize(
    ("semantics", "error"),
    [
        ({"exhaustedPolicy": 3}, "topology node 'S': semantics.exhaustedPolicy: must be text, got 3"),
        ({"aliases": ["served"]}, "topology node 'S': semantics.aliases: must be a mapping {metric: display name}"),
        ({"aliases": {"served": 5}}, "topology node 'S': semantics.aliases.served: must be text, got 5"),
        (
            {"backoffStrategy": "x" * 201},
            "topology node 'S': semantics.backoffStrategy: at most 200 characters, got 201",
        ),
        ({"maxAttempts": [3]}, "topology node 'S': semantics.maxAttempts: expected a number, got [3]"),
        ({"maxAttempts": float("inf")}, "topology node 'S': semantics.maxAttempts: must be finite, got inf"),
    ],
)
def test_bad_labels_are_errors(semantics: dict[str, Any], error: str) -> None:
    assert errors_of(model(BASE, topology={"nodes": [{"id": "S", "semantics": semantics}]})) == [error]


def test_parallelism_is_a_number_or_a_series() -> None:
    nodes = [
        {"id": "A", "semantics": {"served": "s", "parallelism": 2}},
        {"id": "B", "semantics": {"parallelism": "c"}},
    ]
    a, b = load_graph(model(BASE, topology={"nodes": nodes})).topo
    assert (a.parallelism, b.parallelism) == (2, "c")


# -- kinds -----------------------------------------------------------------------------------------


def test_every_upstream_topology_kind_is_read() -> None:
    kinds: list[str | None] = [
        "service",
        "ServiceWithBuffer",
        "QUEUE",
        "dlq",
        "router",
        "sink",
        "dependency",
        "constant",
        "const",
        "pmf",
    ]
    kinds += ["expr", "expression", None]
    nodes = [
        {"id": f"N{i}", "kind": kind, "semantics": {"arrivals": "a", "served": "s"}} for i, kind in enumerate(kinds)
    ]
    nodes.append({"id": "NoKind", "semantics": {"arrivals": "a"}})
    graph = load_graph(model(BASE, topology={"nodes": nodes}))
    shown = [(t.kind, t.declared_kind) for t in graph.topo]
    assert shown == [
        ("service", None),
        ("serviceWithBuffer", None),
        ("queue", None),
        ("dlq", None),
        ("router", None),
        ("sink", None),
        ("service", "dependency"),  # evaluated (metrics, colours) like a service; shown as declared
        ("service", "constant"),
        ("service", "const"),
        ("service", "pmf"),
        ("service", "expr"),
        ("service", "expression"),
        ("service", None),  # kind: null
        ("service", None),  # no kind
    ]
    assert topology_view(graph)["nodes"][6]["declaredKind"] == "dependency"
    assert "declaredKind" not in topology_view(graph)["nodes"][0]


def test_an_unknown_kind_is_still_an_error() -> None:
    (err,) = errors_of(model(BASE, topology={"nodes": [{"id": "X", "kind": "servise"}]}))
    assert err.startswith("topology node 'X': kind: must be one of service, serviceWithBuffer") and "'servise'" in err


def test_a_template_window_beside_the_grid_feeds_the_start_and_must_be_utc() -> None:
    m = model(BASE, generator="flowtime-sim", window={"start": "2025-01-01T00:00:00Z", "timezone": "UTC"})
    assert load_graph(m).grid.start == "2025-01-01T00:00:00Z"
    m["window"] = {"start": "2025-01-01T00:00:00Z", "timezone": "Europe/Paris"}
    assert errors_of(m) == ["window: timezone: only UTC is supported, got 'Europe/Paris' — write the start in UTC"]
    m["window"] = {"start": "2025-01-01T00:00:00Z", "tz": "UTC"}
    assert errors_of(m) == ["window: unknown key 'tz'"]


def test_node_role_is_a_label_and_sink_makes_a_sink() -> None:
    nodes = [
        {"id": "Airport", "kind": "sink", "nodeRole": "sink", "semantics": {"arrivals": "a", "served": "a"}},
        {"id": "Exit", "kind": "service", "nodeRole": "Sink", "semantics": {"arrivals": "a"}},
        {"id": "Buf", "kind": "queue", "nodeRole": "buffer", "semantics": {"arrivals": "a", "served": "s"}},
    ]
    graph = load_graph(model(BASE, topology={"nodes": nodes}))
    assert [(t.kind, t.declared_kind, t.labels) for t in graph.topo] == [
        ("sink", None, {"nodeRole": "sink"}),
        ("sink", "service", {"nodeRole": "Sink"}),
        ("queue", None, {"nodeRole": "buffer"}),
    ]
    assert not [w for w in graph.info if "nodeRole" in w["message"]]  # used, so no unused-key warning
