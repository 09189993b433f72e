"""`retained.parquet`: the held bins of a live run's state as one table (SPEC §6 Snapshots).

One row per bin, `base .. base + n - 1`: column `bin_index` (int64), then per series row of `V`
a float64 column `v:<series id>` (plan.names order), then per telemetry series a bool column
`p:<series id>` (presence: a real value arrived). No dictionary encoding, so every float keeps its
exact bits (-0, NaN payloads); lz4 compression, no statistics: the file is written for speed and
read back whole. A reader checks the columns against the names it expects. `V` (values) and `P`
(presence) are the two matrices of a run's state, one row per series / telemetry series.

`hooks.bin` (`encode_cells`): the warning cells of the hooks' state (`engine_live.derived.hooks_state`), raw
little-endian columns bin int64, entity int32, value float64, read back as zero-copy views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

BIN_COLUMN = "bin_index"
DECODE_CHUNK = 256  # columns decoded at a time


def encode_retained(
    V: NDArray[np.float64], P: NDArray[np.bool_], base: int, names: Sequence[str], telemetry_ids: Sequence[str]
) -> memoryview:
    """The parquet bytes, as a view of Arrow's output buffer (no copy of it under the GIL)."""
    n = V.shape[1]
    arrays: list[pa.Array] = [pa.array(np.arange(base, base + n, dtype=np.int64))]
    rows = V if V.flags.c_contiguous else np.ascontiguousarray(V)  # zero-copy columns of contiguous rows
    arrays += [pa.Array.from_buffers(pa.float64(), n, [None, pa.py_buffer(rows[i])]) for i in range(V.shape[0])]
    arrays += [pa.array(P[j]) for j in range(P.shape[0])]
    columns = [BIN_COLUMN, *(f"v:{sid}" for sid in names), *(f"p:{sid}" for sid in telemetry_ids)]
    table = pa.Table.from_arrays(arrays, names=columns)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="lz4", use_dictionary=False, write_statistics=False)
    out = memoryview(sink.getvalue())
    del table, arrays, sink
    pa.default_memory_pool().release_unused()  # the writer's scratch buffers: back to the system
    return out


def decode_retained(
    data: bytes, base: int, names: Sequence[str], telemetry_ids: Sequence[str], width: int | None = None
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(V, P) back; ValueError when the table does not have the expected columns or bins. With
    `width` (≥ the rows held) V and P are the leading columns of zero-filled arrays that wide."""
    pf = pq.ParquetFile(pa.BufferReader(data))
    expected = [BIN_COLUMN, *(f"v:{sid}" for sid in names), *(f"p:{sid}" for sid in telemetry_ids)]
    if pf.schema_arrow.names != expected:
        raise ValueError("retained.parquet columns do not match the model's series")
    n = pf.metadata.num_rows
    bins = pf.read(columns=[BIN_COLUMN]).column(0).to_numpy()
    if n and (bins[0] != base or not np.array_equal(bins, np.arange(base, base + n))):
        raise ValueError("retained.parquet bins are not the expected contiguous range")
    cols = n if width is None or width < n else width
    V = np.empty((len(names), cols)) if cols == n else np.zeros((len(names), cols))
    P = np.zeros((len(telemetry_ids), cols), dtype=bool)
    rows = [(V, i) for i in range(len(names))] + [(P, j) for j in range(len(telemetry_ids))]
    # a few hundred columns at a time: the decoded Arrow buffers of the whole table (as large as V)
    # would stay in the allocator's pool after use; chunks reuse the same memory, and are faster too
    for first in range(0, len(rows), DECODE_CHUNK):
        part = pf.read(columns=expected[1 + first : 1 + first + DECODE_CHUNK])
        for (target, row), column in zip(rows[first : first + DECODE_CHUNK], part.columns, strict=True):
            target[row, :n] = column.to_numpy(zero_copy_only=False)
        del part
    pa.default_memory_pool().release_unused()
    return (V, P) if cols == n else (V[:, :n], P[:, :n])


CELL_DTYPES = (("bin", "<i8"), ("entity", "<i4"), ("value", "<f8"))


def encode_cells(cells: dict[str, NDArray[Any]]) -> tuple[tuple[memoryview, ...], int]:
    """The hooks' warning cells as raw little-endian columns one after the other: (chunks, rows).
    The chunks are views of the arrays (no copy when they already have these dtypes): the commit
    thread writes and hashes them without holding the GIL for a copy."""
    n = len(cells["bin"])
    return tuple(np.ascontiguousarray(cells[name], dtype=dt).data.cast("B") for name, dt in CELL_DTYPES), n


def decode_cells(data: bytes, n: int) -> dict[str, NDArray[Any]]:
    """Zero-copy (read-only) views of `encode_cells` bytes; ValueError when the size is not n rows."""
    if n < 0 or len(data) != n * sum(np.dtype(dt).itemsize for _, dt in CELL_DTYPES):
        raise ValueError("hooks.bin does not hold the number of cells state.json says")
    out, at = {}, 0
    for name, dt in CELL_DTYPES:
        out[name] = np.frombuffer(data, dtype=dt, count=n, offset=at)
        at += n * np.dtype(dt).itemsize
    return out


__all__ = ["CELL_DTYPES", "decode_cells", "decode_retained", "encode_cells", "encode_retained"]
