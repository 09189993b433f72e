"""Columnar ingest bodies, read straight into a `FrameBatch` (issue 16; docs/api.md "Columnar bodies").

Two forms besides the frames of `ingestion.frames`, picked by the request's content type:

- `application/x-flowtime-columns+ndjson` (`COLUMNS_NDJSON`): one JSON object a line,
  `{"bin": 12, "series": ["a", "b", ...], "values": [1.5, 2, ...]}` — `bin` or an aligned `ts` (both:
  they must agree), an optional `runId`, and two arrays of equal length: telemetry series ids and
  their values for that bin. Line i is frame i of the 422s, the position in its arrays `position`.
- `application/vnd.apache.arrow.stream` (`ARROW_STREAM`): an Arrow IPC stream with the columns
  `bin` (integers), `series` (strings, dictionary-encoded or not), `value` (numbers); row i is
  frame i of the 422s.

The guarantees are those of frames: the request is all-or-nothing, the first problem is a 422 naming
the frame, the field and a code (the codes of `ingestion.frames`, plus `position` for an element of a
line's arrays); a body that is not the form at all is a 400 `malformed_body`; values must be finite
numbers (null, NaN, ±inf, booleans and strings are `invalid_value`). A value counts as one frame
against `max_frames_per_request`. The checks run a column at a time (no Python code per value).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine_live.errors import IngestError, MalformedBodyError, TooLargeError
from engine_live.state.frame_batch import FrameBatch
from ingestion.frames import FrameValidator, parse_body

COLUMNS_NDJSON = "application/x-flowtime-columns+ndjson"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
MEDIA_TYPES = (COLUMNS_NDJSON, ARROW_STREAM)
_LINE_KEYS = frozenset({"runId", "bin", "ts", "series", "values"})
_NUMBER_TYPES = frozenset({int, float})
_ARROW_COLUMNS = ("bin", "series", "value")


def media_type_of(content_type: str | None) -> str:
    """`type/subtype` of a Content-Type header, lower case, without parameters ("" when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _fail(i: int, fld: str | None, code: str, msg: str, **where: Any) -> IngestError:
    return IngestError(f"frame {i}: {msg}", code=code, frame=i, field=fld, **where)


class IngestReader(FrameValidator):
    """The `FrameReader` of a run: frames (JSON, NDJSON), column lines or an Arrow stream, by media type."""

    def read(self, body: bytes, *, last_bin: int, max_frames: int, media_type: str | None = None) -> FrameBatch:
        """Parse and validate a request body; `media_type` picks the form (frames when it is another)."""
        kind = media_type_of(media_type)
        if kind == COLUMNS_NDJSON:
            return self.read_lines(body, last_bin=last_bin, max_values=max_frames)
        if kind == ARROW_STREAM:
            return self.read_arrow(body, last_bin=last_bin, max_values=max_frames)
        return super().read(body, last_bin=last_bin, max_frames=max_frames)

    # -- column lines ---------------------------------------------------------------------------
    def read_lines(self, body: bytes, *, last_bin: int, max_values: int) -> FrameBatch:
        """Column lines → one batch, lines in order (see the module docstring)."""
        lines = parse_body(body)
        if not lines:
            raise IngestError("the body holds no frames", code="no_frames")
        bins: list[NDArray[np.int64]] = []
        series: list[str] = []
        values: list[NDArray[np.float64]] = []
        for i, line in enumerate(lines):
            line_series, line_values = self._line(i, line)
            bins.append(np.full(len(line_series), self._bin(i, line, last_bin), dtype=np.int64))
            series += line_series
            values.append(line_values)
            if len(series) > max_values:
                raise TooLargeError(f"more than {max_values} values (the limit of frames per request)")
        return FrameBatch(np.concatenate(bins), series, np.concatenate(values), len(series))

    def _line(self, i: int, line: Any) -> tuple[list[str], NDArray[np.float64]]:
        if not isinstance(line, dict):
            raise _fail(i, None, "invalid_frame", f"expected a JSON object, got {type(line).__name__}")
        unknown = line.keys() - _LINE_KEYS
        if unknown:
            k = next(k for k in line if k in unknown)
            raise _fail(i, k, "unknown_field", f"unknown field {k!r} in a column line")
        run_id = line.get("runId")
        if run_id is not None and run_id != self.run_id:
            raise _fail(i, "runId", "run_id_mismatch", f"runId {run_id!r} is not this run ({self.run_id!r})")
        series, values = line.get("series"), line.get("values")
        for fld, column in (("series", series), ("values", values)):
            if not isinstance(column, list):
                raise _fail(i, fld, "invalid_frame", f"{fld}: expected an array")
        assert isinstance(series, list) and isinstance(values, list)
        if len(series) != len(values):
            raise _fail(i, "values", "invalid_frame", f"{len(series)} series but {len(values)} values")
        if not series:
            raise _fail(i, "series", "no_values", "no values in the line")
        if set(map(type, series)) != {str} or not self.telemetry.issuperset(series):
            j = next(j for j, s in enumerate(series) if not isinstance(s, str) or s not in self.telemetry)
            raise self._not_telemetry(i, series[j], position=j)
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            j = next(j for j, v in enumerate(values) if type(v) not in _NUMBER_TYPES)
            kind = "null" if values[j] is None else type(values[j]).__name__
            raise _fail(i, "values", "invalid_value", f"values[{j}]: expected a number, got {kind}", position=j)
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond the doubles (never from JSON text: orjson refuses those)
            j = next(j for j, v in enumerate(values) if abs(v) > sys.float_info.max)
            raise _fail(i, "values", "invalid_value", f"values[{j}]: must be a finite number", position=j) from None
        self._finite(i, "values", array, frame_per_row=False)
        return series, array

    def _not_telemetry(self, i: int, sid: Any, **where: Any) -> IngestError:
        what = "is not telemetry-fed" if isinstance(sid, str) and sid in self.all_series else "does not exist"
        return _fail(i, "series", "not_telemetry", f"series {sid!r} {what}", **where)

    def _finite(self, i: int, fld: str, array: NDArray[np.float64], *, frame_per_row: bool) -> None:
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            j = int(bad[0])
            kind = "null" if np.isnan(array[j]) else "±inf"
            if frame_per_row:
                raise _fail(j, fld, "invalid_value", f"{fld}: must be a finite number, got {kind}")
            raise _fail(i, fld, "invalid_value", f"{fld}[{j}]: must be a finite number, got {kind}", position=j)

    # -- Arrow ----------------------------------------------------------------------------------
    def read_arrow(self, body: bytes, *, last_bin: int, max_values: int) -> FrameBatch:
        """An Arrow IPC stream of (bin, series, value) rows → one batch, rows in order."""
        import pyarrow as pa

        try:
            table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise MalformedBodyError(f"the body is not an Arrow IPC stream: {exc}") from None
        for name in table.column_names:
            if name not in _ARROW_COLUMNS:
                raise IngestError(f"unknown column {name!r}", code="unknown_field", frame=None, field=name)
        for name in _ARROW_COLUMNS:
            if name not in table.column_names:
                raise IngestError(f"column {name!r} is missing", code="invalid_frame", frame=None, field=name)
        n = table.num_rows
        if n == 0:
            raise IngestError("the body holds no frames", code="no_frames")
        if n > max_values:
            raise TooLargeError(f"{n} frames exceed the limit of {max_values}")
        bins = self._arrow_bins(table.column("bin"), last_bin)
        series = self._arrow_series(table.column("series"))
        values = _arrow_numbers(table.column("value"), "value", np.float64)
        self._finite(0, "value", values, frame_per_row=True)
        return FrameBatch(bins, series, values, n)

    def _arrow_bins(self, column: Any, last_bin: int) -> NDArray[np.int64]:
        bins = _arrow_numbers(column, "bin", np.int64)
        bad = np.flatnonzero((bins < 0) | (bins >= self.bin_limit(last_bin)))
        if bad.size:
            j = int(bad[0])
            self._bin(j, {"bin": int(bins[j])}, last_bin)  # raises the frame path's error for that bin
        return bins

    def _arrow_series(self, column: Any) -> list[str]:
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise IngestError(f"column 'series': expected strings, got {column.type}", frame=None, field="series")
        if column.null_count:
            j = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise self._not_telemetry(j, None)
        unknown = set(pc.unique(column).to_pylist()) - self.telemetry
        series: list[str] = column.to_pylist()
        if unknown:
            j = next(j for j, s in enumerate(series) if s in unknown)
            raise self._not_telemetry(j, series[j])
        return series


def _arrow_numbers(column: Any, name: str, dtype: type[np.generic]) -> NDArray[Any]:
    """A numeric Arrow column as a numpy array of `dtype`; IngestError for nulls, strings, booleans."""
    import pyarrow as pa

    kind = column.type
    integer = pa.types.is_integer(kind)
    if not (integer or (pa.types.is_floating(kind) and dtype is np.float64)):
        code = "invalid_bin" if name == "bin" else "invalid_value"
        raise IngestError(f"column {name!r}: expected numbers, got {kind}", code=code, frame=None, field=name)
    if column.null_count:
        j = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        code = "missing_bin" if name == "bin" else "invalid_value"
        raise _fail(j, name, code, f"{name}: null")
    array: NDArray[Any] = column.to_numpy().astype(dtype, copy=False)
    return array


__all__ = ["ARROW_STREAM", "COLUMNS_NDJSON", "MEDIA_TYPES", "IngestReader", "media_type_of"]
