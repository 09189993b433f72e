"""Shortest round-trip number text for float64 values, and the per-series CSV bodies built from it.

The number form (SPEC §12.10) — one form, always the same — is Python's ``repr`` (the shortest digit
string that reads back to the same double, closest to it on ties) with three cosmetic rules:

* integral values lose their ``.0``: ``2``, ``-3``, ``1000000000000000``;
* the exponent has no zero padding: ``1e-7``, ``1.5e-5``, ``1e+16``, ``1e+300``, ``5e-324``;
* ``-0`` is written ``0``; non-finite values are ``NaN``, ``Infinity`` and ``-Infinity``.

So positional notation is used for ``1e-4 <= |v| < 1e16`` (``0.1``, ``76.72999999999999``,
``0.0001``) and exponent notation outside it, exactly where ``repr`` switches. The text is never
longer than ``repr``. :func:`format_value` is the (slow, obviously correct) scalar definition.

Fast path (~25-50 ns a value, no per-value Python): orjson writes a block of values in one call
(integral values |v| < 1e16 through its int64 path, the rest through its float path, whose shortest
digits equal ``repr``'s); numpy finds the token boundaries, so each token becomes an element of a
zero-copy Arrow string array; one Arrow ``take`` over ``[row prefixes "\\n<i>", tokens, extras]``
then lays out the CSV rows ``\\n<i>,<v>`` contiguously. Tokens needing another form (non-finite,
and ``1e-5 <= |v| < 1e-4``, which orjson writes positionally) come from the extras.

CSV body of a series (the exact bytes of ``series/<id>.csv``): ``bin_index,value\\n`` then one row
``<i>,<v>\\n`` per bin — every line, the last included, ends in ``\\n``; no ``\\r``, no quoting.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

CSV_HEADER = b"bin_index,value\n"
BLOCK_VALUES = 1 << 16  # values formatted per block: big enough to amortise calls, small for the cache

_HEAD = CSV_HEADER[:-1]  # the rows start with their own "\n"
_TAIL = b"\n"
_OPT = orjson.OPT_SERIALIZE_NUMPY
_COMMA = 44
_SPECIALS = pa.array([",NaN", ",Infinity", ",-Infinity"], pa.string())
_TINY_RE = r"^(,-?)0\.0000(\d)(\d*)$"  # orjson's positional form for 1e-5 <= |v| < 1e-4

FloatArray = npt.NDArray[np.float64]


def format_value(value: float) -> str:
    """The number form of one value (the reference definition the fast path is tested against)."""
    x = float(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    text = repr(x)
    if text.endswith(".0"):
        return text[:-2]
    mantissa, e, exponent = text.partition("e")
    if not e:
        return text
    return f"{mantissa}e{exponent[0]}{exponent[1:].lstrip('0')}"


@dataclass(frozen=True, slots=True)
class CsvBody:
    """The bytes of one series' CSV file as zero-copy pieces (header, row blocks, final newline)."""

    rows: tuple[memoryview, ...]

    def chunks(self) -> tuple[bytes | memoryview, ...]:
        """The file's pieces, in order."""
        return (_HEAD, *self.rows, _TAIL)

    def __len__(self) -> int:
        return len(_HEAD) + sum(row.nbytes for row in self.rows) + len(_TAIL)

    def tobytes(self) -> bytes:
        """The file's bytes in one piece."""
        return b"".join(self.chunks())

    def sha256(self) -> str:
        """``sha256:<hex>`` of the file bytes (the series hash)."""
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return "sha256:" + digest.hexdigest()


@lru_cache(maxsize=8)
def _row_prefixes(count: int) -> pa.StringArray:
    """``["\\n0", "\\n1", ..., "\\n<count-1>"]`` built without a Python loop."""
    data = bytearray(orjson.dumps(np.arange(count, dtype=np.int64), option=_OPT))
    buf = np.frombuffer(data, np.uint8)
    buf[buf == _COMMA] = 10
    buf[0] = 10
    offsets = np.empty(count + 1, np.int32)
    offsets[:-1] = np.flatnonzero(buf == 10)
    offsets[-1] = len(data) - 1
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(bytes(data)))


def _tokens(values: npt.NDArray[np.float64] | npt.NDArray[np.int64]) -> pa.StringArray:
    """Elements ``,<text>`` for ``values[1:]`` from one orjson call (``values[0]`` is a dummy that
    makes every real token start at its separator)."""
    data = orjson.dumps(values, option=_OPT)
    starts = np.flatnonzero(np.frombuffer(data, np.uint8) == _COMMA)
    if starts.size != values.size - 1:  # cannot happen with orjson's numeric output
        raise RuntimeError("unexpected number text from orjson")
    offsets = np.empty(values.size, np.int32)
    offsets[:-1] = starts
    offsets[-1] = len(data) - 1
    return pa.StringArray.from_buffers(values.size - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def _format_block(values: FloatArray, rows: npt.NDArray[np.int64], prefixes: pa.StringArray) -> pa.Array:
    """Rows ``\\n<rows[j]>,<values[j]>`` as a 2n-element string array whose data buffer is the text."""
    n = values.size
    with np.errstate(invalid="ignore"):  # signalling NaNs
        x = values + 0.0  # -0 + 0 == +0
    bad = None if np.isfinite(x).all() else np.flatnonzero(~np.isfinite(x))
    if bad is not None:
        special_kind = np.where(np.isnan(x[bad]), 0, np.where(x[bad] > 0, 1, 2))
        x[bad] = 0.0
    magnitude = np.abs(x)
    integral = (x == np.trunc(x)) & (magnitude < 1e16)  # orjson writes these as "<int>.0"
    n_int = int(np.count_nonzero(integral))

    lo, hi = int(rows.min()), int(rows.max()) + 1
    parts: list[pa.Array] = [prefixes.slice(lo, hi - lo)]
    base = hi - lo
    index = np.empty(2 * n, np.int64)
    np.subtract(rows, lo, out=index[0::2])
    tok_index = index[1::2]
    if n_int:  # integers: orjson's int64 path is twice as fast and has no ".0" to drop
        ints = np.empty(n_int + 1, np.int64)
        ints[0] = 0
        ints[1:] = x if n_int == n else x[integral]
        parts.append(_tokens(ints))
        positions = np.arange(base, base + n_int)
        if n_int == n:
            tok_index[:] = positions
        else:
            tok_index[integral] = positions
        base += n_int
    if n_int < n:
        fractional = ~integral
        floats = np.empty(n - n_int + 1)
        floats[0] = 0.0
        floats[1:] = x[fractional]
        float_tokens = _tokens(floats)
        parts.append(float_tokens)
        tok_index[fractional] = np.arange(base, base + n - n_int)
        tiny = np.flatnonzero((magnitude >= 1e-5) & (magnitude < 1e-4))
        if tiny.size:  # orjson writes 1e-5 <= |v| < 1e-4 positionally; repr (and we) use an exponent
            chosen = pa.array(tok_index[tiny] - base)
            fixed = pc.replace_substring_regex(float_tokens.take(chosen), _TINY_RE, r"\1\2.\3e-5")
            base += n - n_int
            parts.append(pc.replace_substring(fixed, ".e", "e"))
            tok_index[tiny] = np.arange(base, base + tiny.size)
            base += tiny.size
        else:
            base += n - n_int
    if bad is not None:
        tok_index[bad] = base + special_kind
        parts.append(_SPECIALS)
    return pa.concat_arrays(parts).take(pa.array(index))


_PROBE = np.array(
    [
        *(0.0, -0.0, 2.0, -3.0, 0.1, 76.72999999999999, 1e-7, 1e-5, -1.5e-5, 0.0001, 1e15),
        *(9999999999999998.0, 1e16, 1.2345678901234568e17, 1e300, 5e-324, 1 / 3, 123456.789),
        *(math.nan, math.inf, -math.inf),
    ]
)


@lru_cache(maxsize=1)
def fast_path_ok() -> bool:
    """Whether the fast path (i.e. the installed orjson) still gives exactly `format_value`'s text;
    if a new orjson ever writes numbers differently, the slow path is used instead."""
    body = b"".join(next(_fast_bodies([_PROBE])).chunks()).decode()
    return body.split("\n")[1:-1] == [f"{i},{format_value(v)}" for i, v in enumerate(_PROBE)]


def iter_csv_bodies(
    series: Sequence[npt.ArrayLike] | FloatArray, *, block_values: int = BLOCK_VALUES
) -> Iterator[CsvBody]:
    """CSV bodies of many series, in order, formatted in blocks of about ``block_values`` values.

    Accepts a sequence of 1-D arrays (or a 2-D array, one series a row); lengths may differ. The
    bodies reference shared buffers (no copy); keep them only as long as needed.
    """
    arrays = [np.ascontiguousarray(one, dtype=np.float64).reshape(-1) for one in series]
    if fast_path_ok():
        yield from _fast_bodies(arrays, block_values)
    else:
        for array in arrays:
            rows = "".join(f"\n{i},{format_value(value)}" for i, value in enumerate(array.tolist()))
            yield CsvBody((memoryview(rows.encode()),))


def _fast_bodies(arrays: Sequence[FloatArray], block_values: int = BLOCK_VALUES) -> Iterator[CsvBody]:
    longest = max((array.size for array in arrays), default=0)
    prefixes = _row_prefixes(longest) if longest else None
    rows: list[list[memoryview]] = [[] for _ in arrays]
    segments: list[tuple[int, int, int]] = []  # (series, start, stop) in the current block

    def run_block() -> None:
        if not segments:
            return
        assert prefixes is not None
        values = np.concatenate([arrays[i][lo:hi] for i, lo, hi in segments])
        index = np.concatenate([np.arange(lo, hi, dtype=np.int64) for _, lo, hi in segments])
        out = _format_block(values, index, prefixes)
        _, off_buf, data_buf = out.buffers()
        offs = np.frombuffer(off_buf, np.int32, count=len(out) + 1, offset=out.offset * 4)
        view = memoryview(data_buf)
        pos = 0
        for i, lo, hi in segments:
            rows[i].append(view[offs[2 * pos] : offs[2 * (pos + hi - lo)]])
            pos += hi - lo
        segments.clear()

    filled = done = 0
    for i, array in enumerate(arrays):
        start = 0
        while True:
            take = min(array.size - start, block_values - filled)
            if take:
                segments.append((i, start, start + take))
                filled += take
                start += take
            if filled >= block_values:
                run_block()
                filled = 0
                for j in range(done, i + 1 if start >= array.size else i):
                    yield CsvBody(tuple(rows[j]))
                    rows[j] = []
                    done = j + 1
            if start >= array.size:
                break
    run_block()
    for j in range(done, len(arrays)):
        yield CsvBody(tuple(rows[j]))
        rows[j] = []


def series_csv_bytes(values: npt.ArrayLike) -> bytes:
    """The exact bytes of one series' CSV file: ``bin_index,value\\n0,<v0>\\n...\\n``."""
    return next(iter_csv_bodies([values])).tobytes()


def format_values(values: npt.ArrayLike) -> list[str]:
    """The number form of each value (fast path; a Python list is inherently per value)."""
    text = series_csv_bytes(values).decode("ascii")
    return [line.partition(",")[2] for line in text.split("\n")[1:-1]]
