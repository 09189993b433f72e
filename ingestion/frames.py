"""Ingest frames: body parsing and whole-request validation (SPEC §6 frame forms, §12.1, §12.2).

A body is one JSON object, a JSON array of objects, or NDJSON (one object per non-empty line).
A frame picks its bin with `bin` or a bin-aligned RFC 3339 UTC `ts` (both: they must agree) and
addresses values either as `node` + metric fields (resolved through the topology semantics) or as
`series` + `value`. Every value must land on a telemetry-fed series. The request is all-or-nothing:
the first problem raises an IngestError (422) naming the frame index, the field and a code;
otherwise the values come back as one `FrameBatch` (columns, in frame order; counts are of values).

Codes: `malformed_body` (400), `no_frames` (an empty array), `invalid_frame`, `run_id_mismatch`,
`missing_bin`, `invalid_bin`, `ts_not_aligned`, `bin_ts_mismatch`, `bin_out_of_range`,
`bin_too_far_ahead`, `unknown_node`, `not_telemetry`, `ambiguous_frame`, `no_values`, `unknown_field`, `invalid_value`,
`unknown_class`, `no_class_telemetry` (a frame's `classId`, SPEC §14: the value goes to that class of the series).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import orjson

from engine_live.errors import IngestError, MalformedBodyError, TooLargeError
from engine_live.model.series_defs import ModelGraph
from engine_live.state.frame_batch import FrameBatch

MAX_BINS_AHEAD = 1440
_ADDRESS_KEYS = frozenset({"runId", "bin", "ts", "classId"})
_SERIES_KEYS = _ADDRESS_KEYS | {"series", "value"}
TOTAL_CLASS = "DEFAULT"  # a classId naming the total, as upstream bundles do
_SERIES_FIELDS = itemgetter("bin", "series", "value")
_NUMBER_TYPES = frozenset({int, float})


def parse_body(body: bytes | str) -> list[Any]:
    """JSON object → [object]; JSON array → its items; otherwise NDJSON lines. Items are not checked."""
    data = body.encode() if isinstance(body, str) else body
    text = data.strip()
    if not text:
        raise MalformedBodyError("empty body: expected a JSON object, a JSON array or NDJSON")
    if text.startswith(b"{") and b"\n" in text:  # NDJSON: one parse of the lines joined as an array
        joined = _joined_lines(text)
        if joined is not None:
            return joined
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = None
        if text.startswith(b"["):
            raise MalformedBodyError("the body is not valid JSON") from None
    else:
        return whole if isinstance(whole, list) else [whole]
    frames: list[Any] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            frames.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise MalformedBodyError(f"line {line_no} is not valid JSON", line=line_no) from None
    return frames


def _joined_lines(text: bytes) -> list[Any] | None:
    """NDJSON lines as one JSON array, parsed once; None when that does not give one item per line
    (a bad line, a pretty-printed object: the caller then parses line by line for its message)."""
    lines = text.count(b"\n") + 1
    try:  # every newline a comma: no copy of each line (blank lines make it invalid: the slow way below)
        joined = orjson.loads(b"[%s]" % text.replace(b"\n", b","))
    except orjson.JSONDecodeError:
        kept = [ln for ln in text.split(b"\n") if ln.strip()]
        lines = len(kept)
        try:
            joined = orjson.loads(b"[" + b",".join(kept) + b"]")
        except orjson.JSONDecodeError:
            return None
    return joined if isinstance(joined, list) and len(joined) == lines else None


def _fail(i: int, fld: str | None, code: str, msg: str) -> IngestError:
    return IngestError(f"frame {i}: {msg}", code=code, frame=i, field=fld)


def _number(i: int, fld: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        kind = "null" if v is None else type(v).__name__
        raise _fail(i, fld, "invalid_value", f"{fld}: expected a number, got {kind}")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise _fail(i, fld, "invalid_value", f"{fld}: must be a finite number")
    return x


class _Columns(NamedTuple):
    bins: list[int]
    series: list[str]
    values: list[float]

    def add(self, bin_index: int, series: str, value: float) -> None:
        self.bins.append(bin_index)
        self.series.append(series)
        self.values.append(value)


class FrameValidator:
    """Validates frames against one run's model (rebuild it after a PATCH changes the model)."""

    def __init__(self, graph: ModelGraph, run_id: str, *, max_bins_ahead: int = MAX_BINS_AHEAD) -> None:
        self.grid, self.run_id, self.max_bins_ahead = graph.grid, run_id, max_bins_ahead
        self.capacity = graph.grid.capacity()
        self.telemetry = frozenset(graph.telemetry_ids()) - graph.input_rows()
        self.all_series = frozenset(out for d in graph.defs for out in d.outputs)
        self.classes = frozenset(graph.classes)
        self.class_inputs = {
            (one.source, class_id): sid
            for one in graph.class_inputs
            for class_id, sid in zip(graph.classes, one.inputs, strict=True)
        }
        self.nodes: dict[str, dict[str, str]] = {}  # node → field → series (all fields)
        for b in graph.topo:
            self.nodes[b.id] = dict(b.fields)

    def read(self, body: bytes, *, last_bin: int, max_frames: int) -> FrameBatch:
        """Parse and validate a request body (the `FrameReader` port of the live runtime)."""
        raw = parse_body(body)
        if not raw:  # nothing to log: refused rather than an fsynced record of nothing
            raise IngestError("the body holds no frames", code="no_frames")
        if len(raw) > max_frames:
            raise TooLargeError(f"{len(raw)} frames exceed the limit of {max_frames}")
        return self.validate(raw, last_bin=last_bin)

    def validate(self, frames: Iterable[Any], *, last_bin: int) -> FrameBatch:
        """Validate parsed frames: all-or-nothing, the values as one batch in frame order."""
        if isinstance(frames, list):
            fast = self._series_columns(frames, last_bin)
            if fast is not None:
                return fast
        out = _Columns([], [], [])
        count = 0
        for i, frame in enumerate(frames):
            self._one(i, frame, last_bin, out)
            count += 1
        return FrameBatch.of(out.bins, out.series, out.values, frame_count=count)

    def _series_columns(self, frames: list[Any], last_bin: int) -> FrameBatch | None:
        """The batch of a request whose frames are all `{"bin", "series", "value"}` and valid, checked a
        column at a time (no Python code per frame); None for anything else: `validate` then checks
        frame by frame, which finds the first problem and its message (the result is the same)."""
        try:
            if set(map(len, frames)) != {3}:  # also TypeError for an item without a length
                return None
            bins, series, values = map(list, zip(*map(_SERIES_FIELDS, frames), strict=True))
        except (KeyError, TypeError):  # a non-object, or another field (ts, runId, node: the full check)
            return None
        if set(map(type, bins)) != {int} or not set(map(type, values)) <= _NUMBER_TYPES:
            return None
        if set(map(type, series)) != {str} or not self.telemetry.issuperset(series):
            return None
        try:
            bin_array = np.array(bins, dtype=np.int64)
            value_array = np.array(values, dtype=np.float64)
        except OverflowError:
            return None
        if int(bin_array.min()) < 0 or int(bin_array.max()) >= self.bin_limit(last_bin):
            return None
        if not np.isfinite(value_array).all():
            return None
        return FrameBatch(bin_array, series, value_array, len(frames))

    def bin_limit(self, last_bin: int) -> int:
        """One past the highest bin a frame may name now: the grid, year 9999, `max_bins_ahead`."""
        limit = last_bin + self.max_bins_ahead + 1
        if self.grid.bins is not None:
            limit = min(limit, self.grid.bins)
        return limit if self.capacity is None else min(limit, self.capacity)

    def _one(self, i: int, f: Any, last_bin: int, out: _Columns) -> None:
        if not isinstance(f, dict):
            raise _fail(i, None, "invalid_frame", f"expected a JSON object, got {type(f).__name__}")
        run_id = f.get("runId")
        if run_id is not None and run_id != self.run_id:
            raise _fail(i, "runId", "run_id_mismatch", f"runId {run_id!r} is not this run ({self.run_id!r})")
        b = self._bin(i, f, last_bin)
        class_id = self._class(i, f)
        if "node" in f and "series" in f:
            raise _fail(i, "series", "ambiguous_frame", "give either node + metrics or series + value")
        if "series" in f:
            for k in f:
                if k not in _SERIES_KEYS:
                    raise _fail(i, k, "unknown_field", f"unknown field {k!r} in a series frame")
            sid = f["series"]
            if not isinstance(sid, str) or sid not in self.telemetry:
                what = "is not telemetry-fed" if isinstance(sid, str) and sid in self.all_series else "does not exist"
                raise _fail(i, "series", "not_telemetry", f"series {sid!r} {what}")
            if "value" not in f:
                raise _fail(i, "value", "invalid_value", "value: missing")
            out.add(b, self._target(i, "series", sid, class_id), _number(i, "value", f["value"]))
            return
        if "node" not in f:
            raise _fail(i, "node", "invalid_frame", "a frame needs node + metrics or series + value")
        node = f["node"]
        fields = self.nodes.get(node) if isinstance(node, str) else None
        if fields is None:
            raise _fail(i, "node", "unknown_node", f"unknown topology node {node!r}")
        n0 = len(out.series)
        for k, v in f.items():
            if k in _ADDRESS_KEYS or k == "node":
                continue
            sid = fields.get(k)
            if sid is None or sid not in self.telemetry:
                what = "is not telemetry-fed" if sid is not None else "is not a semantic field of the node"
                raise _fail(i, k, "not_telemetry", f"node {node!r}: {k!r} {what}")
            out.add(b, self._target(i, k, sid, class_id), _number(i, k, v))
        if len(out.series) == n0:
            raise _fail(i, None, "no_values", f"node {node!r}: no metric values in the frame")

    def _class(self, i: int, f: dict[str, Any]) -> str | None:
        """The frame's `classId` (SPEC §14): None for none or `DEFAULT` (the total); 422 `unknown_class`."""
        class_id = f.get("classId")
        if class_id is None or class_id == TOTAL_CLASS:
            return None
        if not isinstance(class_id, str) or class_id not in self.classes:
            raise _fail(i, "classId", "unknown_class", f"classId {class_id!r} is not a declared class")
        return class_id

    def _target(self, i: int, fld: str, sid: str, class_id: str | None) -> str:
        """The telemetry row a value goes to: the series, or its class input; 422 `no_class_telemetry`."""
        if class_id is None:
            return sid
        target = self.class_inputs.get((sid, class_id))
        if target is None:
            raise _fail(i, fld, "no_class_telemetry", f"series '{sid}' takes no per-class values (SPEC §14)")
        return target

    def _bin(self, i: int, f: dict[str, Any], last_bin: int) -> int:
        b = f.get("bin")
        ts = f.get("ts")
        if b is None and ts is None:
            raise _fail(i, "bin", "missing_bin", "give bin or ts")
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 0):
            raise _fail(i, "bin", "invalid_bin", f"bin must be an integer >= 0, got {b!r}")
        if ts is not None:
            if not isinstance(ts, str):
                raise _fail(i, "ts", "ts_not_aligned", "ts must be an RFC 3339 UTC string")
            try:
                tb = self.grid.bin_of(ts)
            except ValueError as exc:
                raise _fail(i, "ts", "ts_not_aligned", str(exc)) from None
            if b is not None and b != tb:
                raise _fail(i, "ts", "bin_ts_mismatch", f"ts {ts} is bin {tb}, not bin {b}")
            b = tb
        assert isinstance(b, int)
        if self.grid.bins is not None and b >= self.grid.bins:
            raise _fail(i, "bin", "bin_out_of_range", f"bin {b} is past the grid ({self.grid.bins} bins)")
        if self.capacity is not None and b >= self.capacity:
            raise _fail(i, "bin", "bin_out_of_range", f"bin {b} would end after the year 9999")
        if b > last_bin + self.max_bins_ahead:
            ahead = f"bin {b} is more than {self.max_bins_ahead} bins past lastBin {last_bin}"
            raise _fail(i, "bin", "bin_too_far_ahead", ahead)
        return b


__all__ = ["MAX_BINS_AHEAD", "FrameValidator", "parse_body"]
