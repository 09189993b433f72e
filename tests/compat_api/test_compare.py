"""Compare math (compat_api.compare) and `POST /v1/compare` (SPEC §12.14), hand-computed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from compat_runs_support import GOLDEN_MODEL, make_client, post_model, series_model
from fastapi.testclient import TestClient

from compat_api.compare import ComparedRun, compare_runs, series_stats
from engine_live.errors import CompareMismatchError

A = [10.0, 20.0, 30.0, 40.0]
B = [12.0, 18.0, 30.0, 50.0]
# |b - a| = 2 2 0 10 → MAE 14/4; SMAPE terms 2·2/22, 2·2/38, 0/60, 2·10/90;
# ΣA = 100, ΣB = 110 → +10 %; Pearson: dx = -15 -5 5 15, dy = -15.5 -9.5 2.5 22.5,
# Σdxdy = 630, Σdx² = 500, Σdy² = 843.
MAE = 3.5
SMAPE = round((4 / 22 + 4 / 38 + 0 + 20 / 90) / 4, 6)
PEARSON = round(630 / math.sqrt(500 * 843), 6)


def test_series_stats_by_hand() -> None:
    s = series_stats(np.array(A), np.array(B))
    assert s == {
        "bins": 4,
        "mae": MAE,
        "smape": SMAPE,
        "pearson": PEARSON,
        "percentDelta": 10.0,
        "sumBase": 100.0,
        "sumCompare": 110.0,
    }


def test_series_stats_edge_cases() -> None:
    zero = series_stats(np.zeros(3), np.zeros(3))
    assert zero["smape"] == 0 and zero["mae"] == 0  # 0/0 → 0
    assert zero["pearson"] is None and zero["percentDelta"] is None  # zero variance; ΣA = 0
    # common bins only; non-finite pairs skipped
    s = series_stats(np.array([1.0, np.nan, 3.0, 9.0]), np.array([2.0, 5.0, 3.0]))
    assert s["bins"] == 2 and s["mae"] == 0.5 and s["percentDelta"] == 25.0
    assert series_stats(np.array([np.nan]), np.array([1.0]))["mae"] is None
    assert series_stats(np.array([1.0, 2.0]), np.array([2.0, 1.0]))["pearson"] == -1.0


def run(run_id: str, values: list[float], bin_minutes: int = 5, start: str | None = "S") -> ComparedRun:
    arr = np.array(values)
    return ComparedRun(run_id, bin_minutes, start, {"x": arr, f"only_{run_id}": arr}, {"N": {"served": arr}})


def test_compare_runs_shape_and_mismatch() -> None:
    diff = compare_runs(run("a", A), run("b", B))
    assert diff["series"] == [{"id": "x", **series_stats(np.array(A), np.array(B))}]
    assert diff["nodes"] == [{"nodeId": "N", "metrics": {"served": series_stats(np.array(A), np.array(B))}}]
    assert diff["onlyInBase"] == ["only_a"] and diff["onlyInCompare"] == ["only_b"]
    with pytest.raises(CompareMismatchError):
        compare_runs(run("a", A), run("b", B, bin_minutes=60))
    with pytest.raises(CompareMismatchError):
        compare_runs(run("a", A), run("b", B, start="T"))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


def test_compare_route(client: TestClient, tmp_path: Path) -> None:
    a = post_model(client, series_model(A))
    b = post_model(client, series_model(B))
    r = client.post("/v1/compare", json={"baseRunId": a, "compareRunId": b})
    assert r.status_code == 200, r.text
    body = r.json()
    demand = next(s for s in body["series"] if s["id"] == "demand")
    assert (demand["mae"], demand["smape"], demand["pearson"], demand["percentDelta"]) == (
        MAE,
        SMAPE,
        PEARSON,
        10.0,
    )
    flat = next(s for s in body["series"] if s["id"] == "flat")
    assert (flat["mae"], flat["smape"], flat["pearson"], flat["percentDelta"]) == (0, 0, None, 0)
    assert body["binMinutes"] == 5 and body["bins"] == 4
    saved = orjson.loads((tmp_path / "compares" / body["compareId"] / "diff.json").read_bytes())
    assert saved == body
    again = client.post("/v1/compare", json={"baseRunId": a, "compareRunId": b}).json()
    assert again["compareId"] == body["compareId"]


def test_compare_node_metrics(client: TestClient) -> None:
    a = post_model(client, GOLDEN_MODEL)
    b = post_model(client, GOLDEN_MODEL.replace("values: [25, 25, 25, 25]", "values: [20, 20, 20, 20]"))
    body = client.post("/v1/compare", json={"baseRunId": a, "compareRunId": b}).json()
    svc = next(n for n in body["nodes"] if n["nodeId"] == "Svc")["metrics"]
    # served 10 20 25 25 → 10 20 20 20: |Δ| = 0 0 5 5 → MAE 2.5; Σ 80 → 70: -12.5 %
    assert svc["served"]["mae"] == 2.5 and svc["served"]["percentDelta"] == -12.5
    # utilization 0.4 0.8 1 1 → 0.5 1 1 1
    assert svc["utilization"]["mae"] == round((0.1 + 0.2) / 4, 6)


def test_compare_failures(client: TestClient) -> None:
    a = post_model(client, series_model(A))
    hourly = post_model(client, series_model(B, bin_size=60))
    later = post_model(client, series_model(B, start="2025-10-08T00:00:00Z"))
    for other in (hourly, later):
        r = client.post("/v1/compare", json={"baseRunId": a, "compareRunId": other})
        assert r.status_code == 422 and r.json()["error"] == "grid_mismatch"
    r = client.post("/v1/compare", json={"baseRunId": a, "compareRunId": "missing"})
    assert r.status_code == 404
    r = client.post("/v1/compare", json={"baseRunId": a})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
