"""Pure state builders (compat_api.state_view): look-back, gaps, offsets, matrix sources."""

from __future__ import annotations

import numpy as np
import pytest

from compat_api.state_view import StateSource, data_quality, metrics_body, node_arrays, state_body, state_window_body
from engine_live.errors import InvalidRequestError, TooLargeError
from engine_live.model.build import load_graph
from engine_live.model.grid import Grid

INFER_MODEL = """\
grid: {bins: 4, binSize: 1, binUnit: hours, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: served, kind: const, values: [1, 5, 3, 2]}
  - {id: arrivals, kind: const, values: [1, 5, 3, 2]}
topology:
  nodes:
    - {id: Svc, kind: service, semantics: {arrivals: arrivals, served: served}}
"""


def source(first_bin: int = 0, **kw: object) -> StateSource:
    graph = load_graph(INFER_MODEL)
    values = np.array([1.0, 5.0, 3.0, 2.0])
    return StateSource("r", graph, {"served": values, "arrivals": values.copy()}, first_bin, **kw)  # type: ignore[arg-type]


def test_capacity_inference_looks_back_before_the_requested_bin() -> None:
    # no capacity, no queue, no demand → not saturated → rolling max of served: 1 5 5 5
    src = source()
    d = state_body(src, 3)["nodes"][0]["derived"]
    assert (d["capacityInferred"], d["capacityMethod"], d["capacityConfidence"]) == (5, "rolling_max", "low")
    assert (d["color"], d["colorReason"]) == ("gray", "no_capacity")
    w = state_window_body(src, 2, 3)["nodes"][0]["derived"]
    assert w["capacityInferred"] == [5, 5]
    assert state_window_body(src, 0, 3)["nodes"][0]["derived"]["capacityInferred"] == [1, 5, 5, 5]


def test_offset_source_and_hour_bins() -> None:
    src = source(first_bin=100)
    body = state_body(src, 101)
    assert body["bin"] == {"index": 101, "startUtc": "2025-10-11T05:00:00Z", "endUtc": "2025-10-11T06:00:00Z"}
    assert body["binMinutes"] == 60 and body["nodes"][0]["metrics"]["served"] == 5
    with pytest.raises(InvalidRequestError) as exc:
        state_body(src, 99)
    assert exc.value.code == "bin_out_of_range" and exc.value.http_status == 422
    assert metrics_body(src)["window"] == {"startBin": 100, "endBin": 103}


def test_gaps_turn_the_node_gray_and_fill_data_quality() -> None:
    src = source(gaps={"Svc": np.array([False, True, True, False])})
    body = state_body(src, 1)
    d = body["nodes"][0]["derived"]
    assert (d["color"], d["colorReason"], d["slaMet"]) == ("gray", "data_gap", None)
    assert body["dataQuality"] == {
        "complete": False,
        "gaps": [{"nodeId": "Svc", "bins": [1], "reason": "data_gap"}],
    }
    assert state_body(src, 0)["dataQuality"] == {"complete": True, "gaps": []}
    assert data_quality(src, 0, 3)["gaps"][0]["bins"] == [1, 2]
    # gap bins are not SLA-evaluated
    assert metrics_body(src)["overall"] == {"binsEvaluated": 2, "binsMet": 2, "percentMet": 100.0}


def test_window_checks() -> None:
    src = source()
    with pytest.raises(TooLargeError):
        state_window_body(src, 0, 3, max_bins=3)
    with pytest.raises(InvalidRequestError):
        state_window_body(src, 2, 1)
    assert state_window_body(src, 1, 1, max_bins=1)["window"] == {"startBin": 1, "endBin": 1}


def test_from_matrix_and_reported_grid() -> None:
    graph = load_graph(INFER_MODEL)
    names = ["__zero__", "served", "arrivals"]
    matrix = np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 4.0]])
    src = StateSource.from_matrix("live", graph, names, matrix, first_bin=7, grid=Grid(None, 1, "hours", None))
    body = state_body(src, 8)
    assert body["grid"] == {"bins": None, "binSize": 1, "binUnit": "hours"}
    assert body["bin"] == {"index": 8, "startUtc": None, "endUtc": None}
    assert body["nodes"][0]["metrics"] == {"served": 4, "arrivals": 4}
    assert body["nodes"][0]["derived"]["throughputRatio"] == 1


def test_wire_rounding_and_null() -> None:
    graph = load_graph(INFER_MODEL)
    served = np.array([1 / 3, np.nan, 1e-12, 2.0000005])
    src = StateSource("r", graph, {"served": served, "arrivals": np.ones(4)})
    m = state_window_body(src, 0, 3)["nodes"][0]["metrics"]["served"]
    assert m == [0.333333, None, 0, 2.000001]


def test_node_arrays_keep_full_precision() -> None:
    arrays = node_arrays(source())
    np.testing.assert_array_equal(arrays["Svc"]["served"], [1, 5, 3, 2])
    np.testing.assert_array_equal(arrays["Svc"]["capacityInferred"], [1, 5, 5, 5])
    assert np.isnan(arrays["Svc"]["utilization"]).all()
