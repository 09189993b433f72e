"""`/state`, `/state_window`, `/metrics` (SPEC §3, §12.4, §12.5) against hand-computed values.

Golden model (compat_runs_support.GOLDEN_MODEL), 4 bins of 5 minutes (binMs = 300000):
Svc (service): arrivals 10 20 30 40, capacity 25, served = MIN(arrivals, capacity) = 10 20 25 25,
attempts 10 25 30 25.
Q (queue, slaMin 5): arrivals = Svc served, served = q_out 5 10 20 40, queueDepth = backlog with
Q[t] = max(0, Q[t-1] + in - out): 0+10-5 = 5, 5+20-10 = 15, 15+25-20 = 20, 20+25-40 = 5.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from compat_runs_support import GOLDEN_MODEL, make_client, post_model, series_model
from fastapi.testclient import TestClient

from compat_api.state_view import StateSource, state_body, state_window_body
from engine_live.model.build import load_graph

BIN_MS = 5 * 60000

# ---- by hand -----------------------------------------------------------------------------------
# Svc: utilization = served / capacity; throughputRatio = served / arrivals (clamped to 1);
# retryTax = (attempts - served) / attempts; colours: < 0.7 green, < 0.9 yellow, else red.
SVC_UTIL = [10 / 25, 20 / 25, 25 / 25, 25 / 25]  # 0.4 0.8 1 1
SVC_THROUGHPUT = [10 / 10, 20 / 20, round(25 / 30, 6), 25 / 40]  # 1 1 0.833333 0.625
SVC_RETRY = [(10 - 10) / 10, (25 - 20) / 25, round((30 - 25) / 30, 6), (25 - 25) / 25]  # 0 .2 .166667 0
SVC_COLOR = ["green", "yellow", "red", "red"]
SVC_SLA = [True, True, False, False]  # served/arrivals >= 0.95: 1, 1, 0.83, 0.625
# Q: latencyMinutes = queueDepth / served * 5; queueTimeMs = queueDepth / served * 300000;
# colours against slaMin 5: <= 5 green, <= 7.5 yellow, else red.
Q_DEPTH = [5, 15, 20, 5]
Q_SERVED = [5, 10, 20, 40]
Q_LATENCY = [5 / 5 * 5, 15 / 10 * 5, 20 / 20 * 5, 5 / 40 * 5]  # 5 7.5 5 0.625
Q_QUEUE_MS = [
    5 / 5 * BIN_MS,
    15 / 10 * BIN_MS,
    20 / 20 * BIN_MS,
    5 / 40 * BIN_MS,
]  # 300000 450000 300000 37500
Q_COLOR = ["green", "yellow", "green", "green"]
Q_THROUGHPUT = [5 / 10, 10 / 20, 20 / 25, 1.0]  # 40/25 clamps to 1
Q_SLA = [False, False, False, True]
# SLA: Svc 2 of 4 = 50 %, Q 1 of 4 = 25 %, overall 3 of 8 = 37.5 %.


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def run_id(client: TestClient) -> str:
    return post_model(client, GOLDEN_MODEL)


def node(body: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in body["nodes"] if n["id"] == node_id)


@pytest.mark.parametrize("b", range(4))
def test_state_golden(client: TestClient, run_id: str, b: int) -> None:
    r = client.get(f"/v1/runs/{run_id}/state", params={"binIndex": b})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["runId"] == run_id and body["binMinutes"] == 5
    assert body["bin"] == {
        "index": b,
        "startUtc": f"2025-10-07T00:{5 * b:02d}:00Z",
        "endUtc": f"2025-10-07T00:{5 * b + 5:02d}:00Z",
    }
    assert body["dataQuality"] == {"complete": True, "gaps": []}
    svc, q = node(body, "Svc"), node(body, "Q")
    assert svc["kind"] == "service" and q["kind"] == "queue"
    assert svc["metrics"] == {
        "arrivals": [10, 20, 30, 40][b],
        "served": [10, 20, 25, 25][b],
        "capacity": 25,
        "attempts": [10, 25, 30, 25][b],
    }
    d = svc["derived"]
    assert d["utilization"] == SVC_UTIL[b]
    assert d["throughputRatio"] == SVC_THROUGHPUT[b]
    assert d["retryTax"] == SVC_RETRY[b]
    assert d["latencyMinutes"] is None and d["queueTimeMs"] is None and d["capacityInferred"] is None
    assert (d["color"], d["colorReason"]) == (SVC_COLOR[b], "utilization")
    assert d["slaMet"] is SVC_SLA[b]
    assert q["metrics"] == {"arrivals": [10, 20, 25, 25][b], "served": Q_SERVED[b], "queueDepth": Q_DEPTH[b]}
    d = q["derived"]
    assert d["latencyMinutes"] == Q_LATENCY[b]
    assert d["queueTimeMs"] == Q_QUEUE_MS[b]
    assert d["utilization"] is None  # no capacity series
    assert d["throughputRatio"] == Q_THROUGHPUT[b]
    assert (d["color"], d["colorReason"]) == (Q_COLOR[b], "latency")
    # no capacity, queue > 0 in every bin → saturated → inferred = served, high confidence
    assert (d["capacityInferred"], d["capacityMethod"], d["capacityConfidence"]) == (
        Q_SERVED[b],
        "saturation",
        "high",
    )
    assert d["slaMet"] is Q_SLA[b]


def test_state_window_golden(client: TestClient, run_id: str) -> None:
    r = client.get(f"/v1/runs/{run_id}/state_window", params={"startBin": 0, "endBin": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["window"] == {"startBin": 0, "endBin": 3}
    assert body["timestampsUtc"] == [f"2025-10-07T00:{m:02d}:00Z" for m in (0, 5, 10, 15)]
    assert body["binMinutes"] == 5
    svc, q = node(body, "Svc"), node(body, "Q")
    assert svc["metrics"]["served"] == [10, 20, 25, 25]
    assert svc["derived"]["utilization"] == SVC_UTIL
    assert svc["derived"]["throughputRatio"] == SVC_THROUGHPUT
    assert svc["derived"]["retryTax"] == SVC_RETRY
    assert svc["derived"]["color"] == SVC_COLOR
    assert q["metrics"]["queueDepth"] == Q_DEPTH
    assert q["derived"]["latencyMinutes"] == Q_LATENCY
    assert q["derived"]["queueTimeMs"] == Q_QUEUE_MS
    assert q["derived"]["color"] == Q_COLOR
    assert q["derived"]["slaMet"] == Q_SLA
    sub = client.get(f"/v1/runs/{run_id}/state_window", params={"startBin": 2, "endBin": 3}).json()
    assert node(sub, "Q")["derived"]["latencyMinutes"] == Q_LATENCY[2:]


def test_metrics_sla_summary(client: TestClient, run_id: str) -> None:
    body = client.get(f"/v1/runs/{run_id}/metrics").json()
    assert body["overall"] == {"binsEvaluated": 8, "binsMet": 3, "percentMet": 37.5}
    assert body["nodes"] == [
        {"nodeId": "Svc", "binsEvaluated": 4, "binsMet": 2, "percentMet": 50.0},
        {"nodeId": "Q", "binsEvaluated": 4, "binsMet": 1, "percentMet": 25.0},
    ]
    assert body["binMinutes"] == 5


def test_state_by_ts(client: TestClient, run_id: str) -> None:
    r = client.get(f"/v1/runs/{run_id}/state", params={"ts": "2025-10-07T00:10:00Z"})
    assert r.status_code == 200 and r.json()["bin"]["index"] == 2
    r = client.get(f"/v1/runs/{run_id}/state", params={"ts": "2025-10-07T00:10:00+00:00"})
    assert r.json()["bin"]["index"] == 2


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"ts": "2025-10-07T00:07:00Z"}, "ts_not_aligned"),
        ({"ts": "2025-10-07T00:10:00+02:00"}, "invalid_timestamp"),
        ({"ts": "yesterday"}, "invalid_timestamp"),
        ({}, "invalid_request"),
        ({"binIndex": 1, "ts": "2025-10-07T00:05:00Z"}, "invalid_request"),
        ({"binIndex": 4}, "bin_out_of_range"),
        ({"binIndex": -1}, "bin_out_of_range"),
    ],
)
def test_state_bad_requests(client: TestClient, run_id: str, params: dict[str, Any], code: str) -> None:
    r = client.get(f"/v1/runs/{run_id}/state", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == code


def test_state_window_limits(client: TestClient, run_id: str) -> None:
    r = client.get(f"/v1/runs/{run_id}/state_window", params={"startBin": 0, "endBin": 500})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = client.get(f"/v1/runs/{run_id}/state_window", params={"startBin": 3, "endBin": 1})
    assert r.status_code == 422 and r.json()["error"] == "invalid_window"
    r = client.get(f"/v1/runs/{run_id}/state_window", params={"startBin": 0, "endBin": 4})
    assert r.status_code == 422 and r.json()["error"] == "bin_out_of_range"
    r = client.get(f"/v1/runs/{run_id}/state_window", params={"startBin": 0})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_window_limit_is_a_setting(tmp_path: Path) -> None:
    with make_client(tmp_path, state_window_max_bins=2) as c:
        rid = post_model(c, GOLDEN_MODEL)
        r = c.get(f"/v1/runs/{rid}/state_window", params={"startBin": 0, "endBin": 2})
        assert r.status_code == 413 and r.json()["limit"] == 2


@pytest.mark.parametrize("path", ["state?binIndex=0", "state_window?startBin=0&endBin=1", "metrics"])
def test_unknown_run_is_404(client: TestClient, path: str) -> None:
    r = client.get(f"/v1/runs/nope/{path}")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_model_without_topology_reports_series(client: TestClient) -> None:
    rid = post_model(client, series_model([1, 2, 3, 4]))
    body = client.get(f"/v1/runs/{rid}/state", params={"binIndex": 1}).json()
    assert "nodes" not in body and body["series"] == {"demand": 2, "flat": 7}
    window = client.get(f"/v1/runs/{rid}/state_window", params={"startBin": 1, "endBin": 2}).json()
    assert window["series"] == {"demand": [2, 3], "flat": [7, 7]}


class FakeLive:
    """Just enough of the live service for delegation: it knows run 'live1' (bins 10..11)."""

    def __init__(self) -> None:
        graph = load_graph(GOLDEN_MODEL)
        series = {
            "arrivals": np.array([1.0, 2.0]),
            "served": np.array([1.0, 2.0]),
            "capacity": np.array([4.0, 4.0]),
        }
        self.src = StateSource("live1", graph, series, first_bin=10)
        self.calls: list[tuple[Any, ...]] = []

    ready = True  # recovery is done

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def knows(self, run_id: str) -> bool:
        return run_id == "live1"

    def state_source(self, run_id: str) -> StateSource:
        return self.src

    def state(self, run_id: str, bin_index: int) -> dict[str, Any]:
        self.calls.append(("state", run_id, bin_index))
        return state_body(self.src, bin_index)

    def state_window(self, run_id: str, start: int, end: int) -> dict[str, Any]:
        self.calls.append(("window", run_id, start, end))
        return state_window_body(self.src, start, end)


def test_live_runs_are_delegated(tmp_path: Path) -> None:
    live = FakeLive()
    with make_client(tmp_path, live=live) as c:
        body = c.get("/v1/runs/live1/state", params={"ts": "2025-10-07T00:55:00Z"}).json()
        assert body["bin"]["index"] == 11 and node(body, "Svc")["derived"]["utilization"] == 0.5
        window = c.get("/v1/runs/live1/state_window", params={"startBin": 10, "endBin": 11}).json()
        assert node(window, "Svc")["derived"]["utilization"] == [0.25, 0.5]
        metrics = c.get("/v1/runs/live1/metrics").json()
        assert metrics["window"] == {"startBin": 10, "endBin": 11}
        assert live.calls == [("state", "live1", 11), ("window", "live1", 10, 11)]
        assert c.get("/v1/runs/live1/state", params={"binIndex": 9}).status_code == 422
