"""What an export holds (SPEC §8, §14): its entries (rows per series), columns, schema and units.

Classes: a run with classes gets one float64 column `value@<classId>` per class after `value` —
SPEC §14's "per-class columns" — instead of extra rows, so every row stays one (node, metric, bin)
with its total and its classes side by side, and a class-less run keeps the schema it always had.
The class rows of a series (`<id>@<classId>` in the run view) are therefore never entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from snapshot_writer.run_view import RunView

_COLUMN_DOCS = (
    ("time_utc", pa.timestamp("ms", tz="UTC"), "UTC", "start of the bin (left-aligned); null without a grid start"),
    ("bin_index", pa.int64(), None, "0-based bin of the grid"),
    ("node", pa.string(), None, "topology node id, or the model node id of a series outside the topology"),
    ("metric", pa.string(), None, "semantic field of the topology node (arrivals, served, ...), or 'value'"),
    ("series_id", pa.string(), None, "artifact series id <node>@<NODE>@DEFAULT"),
    ("value", pa.float64(), "see units", "value in the bin; CSV writes NaN/Infinity/-Infinity, NDJSON null"),
)
SCHEMA = pa.schema([(name, kind) for name, kind, _, _ in _COLUMN_DOCS])
COLUMNS = [
    {"name": n, "type": {"double": "float64"}.get(str(k), str(k)), "unit": u, "description": d}
    for n, k, u, d in _COLUMN_DOCS
]


@dataclass(frozen=True)
class Entry:
    """One exported series: the node and metric it is bound to (a series outside the topology: itself, "value")."""

    node: str
    metric: str
    series: str  # model series id


def entries_of(view: RunView) -> list[Entry]:
    """The export's entries: bound series in topology order, then the series outside the topology."""
    out = [Entry(node, field, sid) for node, field, sid in view.bindings()]
    bound = {entry.series for entry in out}
    rows = view.class_rows  # class rows are columns of their total's rows
    out += [Entry(sid, "value", sid) for sid in view.series if sid not in bound and sid not in rows]
    return out


def class_column(class_id: str) -> str:
    """The export column of a class's values."""
    return f"value@{class_id}"


def schema_of(class_ids: Sequence[str]) -> pa.Schema:
    """The export's schema: SCHEMA, then one float64 column per class."""
    return pa.schema([*SCHEMA, *((class_column(c), pa.float64()) for c in class_ids)])


def columns_of(class_ids: Sequence[str]) -> list[dict[str, Any]]:
    """catalog.json's columns: COLUMNS, then one per class."""
    what = "value of class {} in the bin (series <node>@<NODE>@{}); null on a series without classes"
    return [
        *COLUMNS,
        *(
            {"name": class_column(c), "type": "float64", "unit": "see units", "description": what.format(c, c)}
            for c in class_ids
        ),
    ]


def artifact_id(sid: str) -> str:
    """The export's series id: `<sid>@<SID>@DEFAULT`."""
    return f"{sid}@{sid.upper()}@DEFAULT"


def unit_of(view: RunView, entry: Entry) -> dict[str, Any]:
    """catalog.json's units entry of an entry; a class-bearing series also names its class series."""
    unit: dict[str, Any] = {
        "node": entry.node,
        "metric": entry.metric,
        "seriesId": artifact_id(entry.series),
        "unit": view.units.get(entry.series) or "entities/bin",
    }
    classes = view.classes.get(entry.series, ())
    if classes:
        unit["classSeriesIds"] = {c: artifact_id(entry.series).removesuffix("DEFAULT") + c for c in classes}
    return unit
