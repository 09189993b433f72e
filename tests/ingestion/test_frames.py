"""Frame parsing and whole-request validation (SPEC §6, §12.1, §12.2)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine_live.errors import IngestError, MalformedBodyError
from engine_live.model.build import load_graph
from ingestion.frames import FrameValidator, parse_body

MODEL = """
grid: {bins: 100, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: live_in, kind: const, source: telemetry}
  - {id: cap, kind: const, values: [5]}
  - {id: served, kind: expr, expr: "MIN(live_in, cap)"}
topology:
  nodes:
    - id: OrderService
      kind: service
      semantics: {arrivals: live_in, served: served, capacity: cap, errors: telemetry}
"""


@pytest.fixture(scope="module")
def validator() -> FrameValidator:
    text = MODEL.replace("values: [5]", "values: " + str([5] * 100))
    return FrameValidator(load_graph(text, live=True), "r1", max_bins_ahead=10)


def check(v: FrameValidator, frames: list[Any], last_bin: int = 50) -> list[tuple[int, str, float]]:
    return v.validate(frames, last_bin=last_bin).frames()


def reject(v: FrameValidator, frames: list[Any], code: str, frame: int, field: str | None) -> None:
    with pytest.raises(IngestError) as info:
        check(v, frames)
    err = info.value
    assert (err.code, err.details["frame"], err.details["field"]) == (code, frame, field), err.message
    assert err.http_status == 422


def test_parse_object_array_and_ndjson() -> None:
    one = {"bin": 1, "series": "live_in", "value": 2}
    assert parse_body(orjson.dumps(one)) == [one]
    assert parse_body(orjson.dumps([one, one])) == [one, one]
    assert parse_body(b'{"bin": 1}\n\n{"bin": 2}\n') == [{"bin": 1}, {"bin": 2}]
    assert parse_body('{\n "bin": 3\n}') == [{"bin": 3}]  # one pretty-printed object
    for bad in (b"", b"[1, 2", b'{"bin": 1}\n{"bin":'):
        with pytest.raises(MalformedBodyError) as info:
            parse_body(bad)
        assert info.value.http_status == 400


def test_node_and_series_forms_give_one_value_each(validator: FrameValidator) -> None:
    frames = [
        {"runId": "r1", "bin": 12, "node": "OrderService", "arrivals": 35, "errors": 2},
        {"ts": "2025-10-07T01:00:00Z", "series": "live_in", "value": 17.5},
        {"bin": 13, "ts": "2025-10-07T01:05:00+00:00", "series": "OrderService.errors", "value": -1},
    ]
    assert check(validator, frames) == [
        (12, "live_in", 35.0),
        (12, "OrderService.errors", 2.0),
        (12, "live_in", 17.5),
        (13, "OrderService.errors", -1.0),
    ]


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ({"bin": 1, "series": "live_in", "value": 1, "runId": "other"}, "run_id_mismatch", "runId"),
        ({"series": "live_in", "value": 1}, "missing_bin", "bin"),
        ({"bin": -1, "series": "live_in", "value": 1}, "invalid_bin", "bin"),
        ({"bin": True, "series": "live_in", "value": 1}, "invalid_bin", "bin"),
        ({"ts": "2025-10-07T01:01:00Z", "series": "live_in", "value": 1}, "ts_not_aligned", "ts"),
        ({"ts": "2025-10-07T01:00:00+02:00", "series": "live_in", "value": 1}, "ts_not_aligned", "ts"),
        ({"bin": 11, "ts": "2025-10-07T01:00:00Z", "series": "live_in", "value": 1}, "bin_ts_mismatch", "ts"),
        ({"bin": 100, "series": "live_in", "value": 1}, "bin_out_of_range", "bin"),
        ({"bin": 61, "series": "live_in", "value": 1}, "bin_too_far_ahead", "bin"),
        ({"bin": 1, "series": "served", "value": 1}, "not_telemetry", "series"),
        ({"bin": 1, "series": "nope", "value": 1}, "not_telemetry", "series"),
        ({"bin": 1, "series": "live_in", "value": None}, "invalid_value", "value"),
        ({"bin": 1, "series": "live_in", "value": "3"}, "invalid_value", "value"),
        ({"bin": 1, "series": "live_in", "value": float("nan")}, "invalid_value", "value"),
        ({"bin": 1, "series": "live_in", "value": float("inf")}, "invalid_value", "value"),
        ({"bin": 1, "series": "live_in", "value": 10**400}, "invalid_value", "value"),
        ({"bin": 1, "series": "live_in"}, "invalid_value", "value"),
        ({"bin": 1, "series": "live_in", "value": 1, "extra": 2}, "unknown_field", "extra"),
        ({"bin": 1, "node": "Nope", "arrivals": 1}, "unknown_node", "node"),
        ({"bin": 1, "node": "OrderService", "served": 1}, "not_telemetry", "served"),
        ({"bin": 1, "node": "OrderService", "arivals": 1}, "not_telemetry", "arivals"),
        ({"bin": 1, "node": "OrderService", "arrivals": None}, "invalid_value", "arrivals"),
        ({"bin": 1, "node": "OrderService"}, "no_values", None),
        ({"bin": 1, "node": "OrderService", "series": "live_in", "value": 1}, "ambiguous_frame", "series"),
        ({"bin": 1}, "invalid_frame", "node"),
    ],
)
def test_bad_frames_name_index_field_and_code(
    validator: FrameValidator, frame: dict[str, Any], code: str, field: str | None
) -> None:
    good = {"bin": 1, "series": "live_in", "value": 1}
    reject(validator, [good, good, frame], code, 2, field)


def test_request_is_all_or_nothing_and_non_objects_are_rejected(validator: FrameValidator) -> None:
    reject(validator, [{"bin": 1, "series": "live_in", "value": 1}, [1, 2]], "invalid_frame", 1, None)
    # the bound moves with lastBin
    assert check(validator, [{"bin": 20, "series": "live_in", "value": 1}], last_bin=10)
    with pytest.raises(IngestError):
        check(validator, [{"bin": 21, "series": "live_in", "value": 1}], last_bin=10)


def test_a_live_bin_that_would_end_after_the_year_9999_is_refused() -> None:
    """Issue 12 #5/#9: such a frame was logged and applied, then its timestamps failed (400 internal)."""
    text = (
        'grid: {binSize: 1, binUnit: days, start: "9999-12-29T00:00:00Z"}\n'
        "nodes:\n  - {id: x, kind: const, source: telemetry}\n"
    )
    v = FrameValidator(load_graph(text, live=True), "r1", max_bins_ahead=10)
    assert check(v, [{"bin": 1, "series": "x", "value": 1}], last_bin=0) == [(1, "x", 1.0)]
    with pytest.raises(IngestError) as info:
        check(v, [{"bin": 2, "series": "x", "value": 1}], last_bin=0)
    assert info.value.code == "bin_out_of_range"
