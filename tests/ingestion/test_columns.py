"""Columnar ingest bodies (issue 16): column lines and Arrow streams, with the guarantees of frames;
and the column-at-a-time check of series frames, which must agree with the frame-by-frame one."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pyarrow as pa
import pytest

from engine_live.errors import IngestError, MalformedBodyError, TooLargeError
from engine_live.model.build import load_graph
from ingestion.columns import ARROW_STREAM, COLUMNS_NDJSON, IngestReader
from ingestion.frames import FrameValidator

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
ERRORS = "OrderService.errors"


@pytest.fixture(scope="module")
def reader() -> IngestReader:
    text = MODEL.replace("values: [5]", "values: " + str([5] * 100))
    return IngestReader(load_graph(text, live=True), "r1", max_bins_ahead=10)


def lines(*objs: Any) -> bytes:
    return b"\n".join(orjson.dumps(o) for o in objs)


def read_lines(r: IngestReader, body: bytes, max_frames: int = 100) -> list[tuple[int, str, float]]:
    return r.read(body, last_bin=50, max_frames=max_frames, media_type=f"{COLUMNS_NDJSON}; charset=utf-8").frames()


def arrow(columns: dict[str, Any], schema: pa.Schema | None = None) -> bytes:
    table = pa.table(columns, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def read_arrow(r: IngestReader, body: bytes, max_frames: int = 100) -> list[tuple[int, str, float]]:
    return r.read(body, last_bin=50, max_frames=max_frames, media_type=ARROW_STREAM.upper()).frames()


def test_column_lines_give_the_values_of_the_equivalent_frames(reader: IngestReader) -> None:
    body = lines(
        {"bin": 12, "series": ["live_in", ERRORS], "values": [35, 2.5]},
        {"ts": "2025-10-07T01:05:00Z", "runId": "r1", "series": [ERRORS], "values": [-1]},
    )
    assert read_lines(reader, body) == [(12, "live_in", 35.0), (12, ERRORS, 2.5), (13, ERRORS, -1.0)]
    batch = reader.read(body, last_bin=50, max_frames=100, media_type=COLUMNS_NDJSON)
    assert batch.frame_count == 3 and batch.bins.dtype.name == "int64"
    one = orjson.dumps({"bin": 1, "series": ["live_in"], "values": [1]})
    assert read_lines(reader, one) == [(1, "live_in", 1.0)]  # a single line (no newline)


@pytest.mark.parametrize(
    ("line", "code", "field", "position"),
    [
        ([1, 2], "invalid_frame", None, None),
        ({"bin": 1, "series": ["live_in"], "values": [1], "value": 1}, "unknown_field", "value", None),
        ({"bin": 1, "series": ["live_in"], "values": [1], "runId": "r2"}, "run_id_mismatch", "runId", None),
        ({"series": ["live_in"], "values": [1]}, "missing_bin", "bin", None),
        ({"bin": -1, "series": ["live_in"], "values": [1]}, "invalid_bin", "bin", None),
        ({"bin": 61, "series": ["live_in"], "values": [1]}, "bin_too_far_ahead", "bin", None),
        ({"bin": 100, "series": ["live_in"], "values": [1]}, "bin_out_of_range", "bin", None),
        ({"ts": "2025-10-07T01:01:00Z", "series": ["live_in"], "values": [1]}, "ts_not_aligned", "ts", None),
        ({"bin": 1, "series": "live_in", "values": [1]}, "invalid_frame", "series", None),
        ({"bin": 1, "series": ["live_in"], "values": 1}, "invalid_frame", "values", None),
        ({"bin": 1, "series": ["live_in", ERRORS], "values": [1]}, "invalid_frame", "values", None),
        ({"bin": 1, "series": [], "values": []}, "no_values", "series", None),
        ({"bin": 1, "series": ["live_in", "served"], "values": [1, 2]}, "not_telemetry", "series", 1),
        ({"bin": 1, "series": ["live_in", 3], "values": [1, 2]}, "not_telemetry", "series", 1),
        ({"bin": 1, "series": ["live_in", ERRORS], "values": [1, None]}, "invalid_value", "values", 1),
        ({"bin": 1, "series": ["live_in", ERRORS], "values": [True, 1]}, "invalid_value", "values", 0),
        ({"bin": 1, "series": ["live_in", ERRORS], "values": [1, "2"]}, "invalid_value", "values", 1),
    ],
)
def test_a_bad_line_names_line_field_position_and_code(
    reader: IngestReader, line: Any, code: str, field: str | None, position: int | None
) -> None:
    good = {"bin": 1, "series": ["live_in"], "values": [1]}
    with pytest.raises(IngestError) as info:
        read_lines(reader, lines(good, line, good))
    err = info.value
    assert (err.code, err.details["frame"], err.details["field"]) == (code, 1, field), err.message
    assert err.details.get("position") == position and err.http_status == 422


def test_column_lines_limits_and_malformed_bodies(reader: IngestReader) -> None:
    big = {"bin": 1, "series": ["live_in"] * 60, "values": [1] * 60}
    assert len(read_lines(reader, lines(big))) == 60
    with pytest.raises(TooLargeError):  # a value counts as a frame
        read_lines(reader, lines(big, big))
    for bad in (b"", b'{"bin": 1, "series": [', b"[]"):
        with pytest.raises(IngestError) as info:
            read_lines(reader, bad)
        assert info.value.code in ("malformed_body", "no_frames")
    with pytest.raises(IngestError) as info2:  # a value past the doubles (only possible from Python)
        reader._line(0, {"bin": 1, "series": ["live_in"], "values": [10**400]})
    assert info2.value.code == "invalid_value" and info2.value.details["position"] == 0


def test_an_arrow_stream_gives_the_same_values(reader: IngestReader) -> None:
    series = pa.array(["live_in", ERRORS, "live_in"]).dictionary_encode()
    body = arrow({"bin": pa.array([3, 3, 4], pa.int32()), "series": series, "value": [1.5, 2.0, 3.0]})
    assert read_arrow(reader, body) == [(3, "live_in", 1.5), (3, ERRORS, 2.0), (4, "live_in", 3.0)]
    plain = arrow({"bin": [5], "series": ["live_in"], "value": pa.array([7], pa.int64())})
    assert read_arrow(reader, plain) == [(5, "live_in", 7.0)]


@pytest.mark.parametrize(
    ("columns", "code", "frame", "field"),
    [
        ({"bin": [1, 2], "series": ["live_in", "live_in"], "value": [1.0, float("nan")]}, "invalid_value", 1, "value"),
        ({"bin": [1, 2], "series": ["live_in", "live_in"], "value": [float("inf"), 1.0]}, "invalid_value", 0, "value"),
        ({"bin": [1, 2], "series": ["live_in", "live_in"], "value": [1.0, None]}, "invalid_value", 1, "value"),
        ({"bin": [1, 2], "series": ["live_in", "served"], "value": [1.0, 2.0]}, "not_telemetry", 1, "series"),
        ({"bin": [1, 2], "series": ["live_in", None], "value": [1.0, 2.0]}, "not_telemetry", 1, "series"),
        ({"bin": [1, 99], "series": ["live_in", "live_in"], "value": [1.0, 2.0]}, "bin_too_far_ahead", 1, "bin"),
        ({"bin": [-1, 2], "series": ["live_in", "live_in"], "value": [1.0, 2.0]}, "invalid_bin", 0, "bin"),
        ({"bin": [1, None], "series": ["live_in", "live_in"], "value": [1.0, 2.0]}, "missing_bin", 1, "bin"),
        ({"bin": [1.0], "series": ["live_in"], "value": [1.0]}, "invalid_bin", None, "bin"),
        ({"bin": [1], "series": ["live_in"], "value": ["1"]}, "invalid_value", None, "value"),
        ({"bin": [1], "series": [1], "value": [1.0]}, "invalid_frame", None, "series"),
        ({"bin": [1], "series": ["live_in"]}, "invalid_frame", None, "value"),
        ({"bin": [1], "series": ["live_in"], "value": [1.0], "ts": ["x"]}, "unknown_field", None, "ts"),
        ({"bin": pa.array([], pa.int64()), "series": pa.array([], pa.string()), "value": []}, "no_frames", None, None),
    ],
)
def test_a_bad_arrow_stream_names_row_and_column(
    reader: IngestReader, columns: dict[str, Any], code: str, frame: int | None, field: str | None
) -> None:
    with pytest.raises(IngestError) as info:
        read_arrow(reader, arrow(columns))
    err = info.value
    assert (err.code, err.details.get("frame"), err.details.get("field")) == (code, frame, field), err.message


def test_arrow_limits_and_malformed_bodies(reader: IngestReader) -> None:
    with pytest.raises(TooLargeError):
        read_arrow(reader, arrow({"bin": [1] * 3, "series": ["live_in"] * 3, "value": [1.0] * 3}), max_frames=2)
    with pytest.raises(MalformedBodyError) as info:
        read_arrow(reader, b'{"bin": 1}')
    assert info.value.http_status == 400


def test_other_media_types_read_frames(reader: IngestReader) -> None:
    body = b'{"bin": 1, "series": "live_in", "value": 2}'
    for media in (None, "application/json", "application/x-ndjson", "text/plain"):
        assert reader.read(body, last_bin=0, max_frames=10, media_type=media).frames() == [(1, "live_in", 2.0)]


def outcome(v: FrameValidator, frames: Any) -> Any:
    try:
        batch = v.validate(frames, last_bin=50)
    except IngestError as exc:
        return (exc.code, exc.details.get("frame"), exc.details.get("field"))
    return (batch.frames(), batch.frame_count, batch.bins.dtype.name, batch.values.dtype.name)


def test_series_frames_checked_a_column_at_a_time_agree_with_the_frame_by_frame_check(reader: IngestReader) -> None:
    """`validate` takes a list of plain series frames a column at a time and falls back to the frame
    by frame check for anything else; an iterator always gets the latter. Both must agree."""
    rng = random.Random(16)
    oddities: list[tuple[str, Any]] = [
        ("bin", -1), ("bin", 100), ("bin", 61), ("bin", True), ("bin", 2**70), ("bin", 1.0), ("bin", "1"),
        ("series", "served"), ("series", "nope"), ("series", 3), ("series", None),
        ("value", None), ("value", True), ("value", "1"), ("value", float("nan")), ("value", float("inf")),
        ("value", 10**400), ("value", 2**70), ("runId", "r1"), ("runId", "x"), ("ts", "2025-10-07T00:05:00Z"),
        ("extra", 1),
    ]  # fmt: skip
    for _ in range(300):
        frames: list[Any] = [
            {"bin": rng.randrange(0, 60), "series": rng.choice(["live_in", ERRORS]), "value": rng.choice([1, 2.5, -3])}
            for _ in range(rng.randrange(1, 6))
        ]
        if rng.random() < 0.6:
            frame = frames[rng.randrange(len(frames))]
            key, value = rng.choice(oddities)
            if rng.random() < 0.2:
                frame.pop(rng.choice(["bin", "series", "value"]))
            frame[key] = value
        if rng.random() < 0.05:
            frames.append([1, 2, 3])
        assert outcome(reader, frames) == outcome(reader, iter(frames)), frames
