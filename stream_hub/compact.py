"""Compact `run_update`s (issue 16; docs/stream-protocol.md "Compact events"): one array per field.

A client that subscribes with `"format": "compact"` gets every `run_update` as its envelope (all the
fields but `deltas`), `"format": "compact"` and the node table as columns:

    {"v":1,"type":"run_update",...,"revision":0,"format":"compact","base":41,"idx":[3,17],
     "metrics":{"arrivals":[35,12],"served":[33,12]},"derived":{"utilization":[0.9,0.4],"color":"green",...}}

- `layout` (`{"nodes": [ids], "kinds": [kinds]}`, plus `"sparse": {section: {field: [positions]}}`
  when some nodes lack a field) comes with the first update after subscribing, after a snapshot, and
  whenever it changes (a PATCH adding nodes): it is the node order every later update refers to;
- without `base` the update holds every node, in layout order (a *key* update); with `base` it holds
  only the nodes whose values differ from those of the update `base` (the seq of the `run_update`
  this client received last), at the layout positions `idx`: every other node is as in `base`;
- a column is an array (one value per node carried) or a single value (every node carried has it).

A class-bearing node's `byClass` (SPEC §14) travels as one section per class with the same columns
as the totals, `"byClass": {classId: {field: column}}`; `layout.byClass` lists the positions of the
nodes that carry `byClass` and `sparse.byClass.<classId>` the positions that have a field when not
all do. A node carries a class when it has one of its fields (an empty class entry has no compact
form: such an update is sent as it is). A `classes` filter keeps only its classes' sections.

A model without topology has `layout: {"series": [ids]}` and one column `values`.

The table of an event is built once (`CompactTable.of_event` from the publisher's dict when the run
has compact clients, else `CompactTable.of` from its bytes; shared through the hub's encoding cache);
an encoding depends only on the event, the client's previous update and its filters, so
clients that keep up share one (`EventEncodings.compact`). An event the hub cannot put in this form
(deltas that are not NodeDeltas) is sent as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

__all__ = ["CompactTable", "compact_update"]

Column = NDArray[Any]  # float64 (null as NaN) when every value is a number or null, else objects
Section = dict[str, Column]
_NODE_ID, _KIND, _METRICS = itemgetter("nodeId"), itemgetter("kind"), itemgetter("metrics")
_NUMBERS = frozenset({float, int, type(None)})


def _objects(values: Any, n: int) -> Column:
    """A column: float64 for numbers and nulls (compared and encoded as vectors), else objects."""
    if _NUMBERS.issuperset(map(type, values)):
        try:
            return np.array(values, dtype=np.float64)
        except OverflowError:  # an integer past the doubles: kept as it is
            pass
    out: Column = np.empty(n, dtype=object)
    out[:] = values
    return out


def _section(dicts: list[dict[str, Any]]) -> tuple[Section, dict[str, list[int]]]:
    """Columns of equal-keyed dicts (C-level itemgetter and zip, no Python code per value); dicts with
    differing keys get `None` where a field is missing and its positions listed (`sparse`)."""
    n = len(dicts)
    names = tuple(dicts[0]) if dicts else ()
    if len(set(map(len, dicts))) == 1:  # as many keys each: the same keys unless one lacks a name
        if not names:
            return {}, {}
        try:
            rows = list(map(itemgetter(*names), dicts)) if len(names) > 1 else [(d[names[0]],) for d in dicts]
        except KeyError:
            rows = None
        if rows is not None:
            return {name: _objects(col, n) for name, col in zip(names, zip(*rows, strict=True), strict=True)}, {}
    names = tuple(dict.fromkeys(k for d in dicts for k in d))
    columns = {name: _objects([d.get(name) for d in dicts], n) for name in names}
    sparse = {name: [p for p, d in enumerate(dicts) if name in d] for name in names}
    return columns, {name: where for name, where in sparse.items() if len(where) < n}


def _class_sections(deltas: list[dict[str, Any]]) -> tuple[list[int], dict[str, Section], dict[str, Any]] | None:
    """The nodes carrying `byClass` (positions), one section per class, and the classes' gaps; None
    when an entry has no compact form (a class with no field)."""
    found = [(p, by) for p, d in enumerate(deltas) if (by := d.get("byClass")) is not None]
    if not found:
        return [], {}, {}
    if not all(isinstance(by, dict) and all(isinstance(v, dict) and v for v in by.values()) for _, by in found):
        return None
    empty: dict[str, Any] = {}
    sections: dict[str, Section] = {}
    gaps: dict[str, Any] = {}
    for class_id in dict.fromkeys(c for _, by in found for c in by):
        rows = [empty] * len(deltas)
        for p, by in found:
            rows[p] = by.get(class_id, empty)
        sections[class_id], where = _section(rows)
        if where:
            gaps[class_id] = where
    return [p for p, _ in found], sections, gaps


def _remap(gaps: dict[str, Any], where: dict[int, int]) -> dict[str, Any]:
    """Sparse positions (`{field: [p]}`, nested per class for `byClass`) after a `keep`."""
    return {
        k: _remap(v, where) if isinstance(v, dict) else [where[p] for p in v if p in where] for k, v in gaps.items()
    }


def _column(values: Column) -> Any:
    """An array, or its one value when every node has the same (all-null columns are common)."""
    if values.size > 1:
        if values.dtype == object:
            if np.equal(values, values[0]).all():
                return values[0]
        elif np.isnan(values[0]):
            if np.isnan(values).all():
                return None
        elif (values == values[0]).all():
            return values[0].item()
    return values.tolist()  # NaN is encoded as null


def _differs(a: Column, b: Column) -> NDArray[np.bool_]:
    if a.dtype == object or b.dtype == object:
        differs: NDArray[np.bool_] = np.asarray(np.not_equal(a, b), dtype=bool)
        return differs
    numeric: NDArray[np.bool_] = (a != b) & ~(np.isnan(a) & np.isnan(b))
    return numeric


@dataclass(frozen=True, slots=True)
class CompactTable:
    """A `run_update` as its envelope and its node table in columns (sections `metrics`, `derived`,
    or `values` for a model without topology; one section per class of `byClass`)."""

    head: dict[str, Any]
    layout: dict[str, Any]
    layout_key: bytes  # equal layouts, equal keys: a delta needs the same layout as its base
    sections: dict[str, Section]
    size: int  # nodes (or series)
    classes: dict[str, Section]  # classId → its section (the nodes without it: null, listed in sparse)

    @classmethod
    def of(cls, data: bytes) -> CompactTable | None:
        """Decode an encoded `run_update`; None when its deltas are not NodeDeltas or one SeriesDelta."""
        return cls.of_event(orjson.loads(data))

    @classmethod
    def of_event(cls, event: dict[str, Any]) -> CompactTable | None:
        """The table of a `run_update` dict (not changed); None as for `of`."""
        head = {k: v for k, v in event.items() if k != "deltas"}
        deltas = event.get("deltas") or []
        try:
            if len(deltas) == 1 and "nodeId" not in deltas[0] and isinstance(deltas[0].get("series"), dict):
                series = deltas[0]["series"]
                layout: dict[str, Any] = {"series": list(series)}
                sections = {"values": {"value": _objects(list(series.values()), len(series))}}
                return cls._make(head, layout, sections, len(series))
            ids, kinds = list(map(_NODE_ID, deltas)), list(map(_KIND, deltas))
            metrics, metric_gaps = _section(list(map(_METRICS, deltas)))
            derived, derived_gaps = _section([d.get("derived") or {} for d in deltas])
            by_class = _class_sections(deltas)
        except (KeyError, TypeError, AttributeError):
            return None
        if by_class is None:
            return None
        bearing, classes, class_gaps = by_class
        layout = {"nodes": ids, "kinds": kinds}
        if bearing:
            layout["byClass"] = bearing
        gaps = (("metrics", metric_gaps), ("derived", derived_gaps), ("byClass", class_gaps))
        sparse = {name: where for name, where in gaps if where}
        if sparse:
            layout["sparse"] = sparse
        return cls._make(head, layout, {"metrics": metrics, "derived": derived}, len(ids), classes)

    @classmethod
    def _make(
        cls,
        head: dict[str, Any],
        layout: dict[str, Any],
        sections: dict[str, Section],
        n: int,
        classes: dict[str, Section] | None = None,
    ) -> CompactTable:
        classes = classes or {}
        shape = [{name: list(section) for name, section in group.items()} for group in (sections, classes)]
        return cls(head, layout, orjson.dumps([layout, shape]), sections, n, classes)

    def __len__(self) -> int:  # bytes, roughly, for the cache's budget (an object cell: pointer + object)
        groups = (*self.sections.values(), *self.classes.values())
        cells = sum((8 if col.dtype != object else 64) * col.size for s in groups for col in s.values())
        return len(self.layout_key) + cells + 512

    def keep(self, nodes: frozenset[str]) -> CompactTable:
        """The table of a `nodes` filter: only those nodes, in layout order."""
        ids = self.layout.get("nodes", self.layout.get("series", []))
        kept = np.asarray([p for p, node in enumerate(ids) if node in nodes], dtype=np.intp)
        layout: dict[str, Any] = {key: [ids[p] for p in kept] for key in ("nodes", "series") if key in self.layout}
        if "kinds" in self.layout:
            layout["kinds"] = [self.layout["kinds"][p] for p in kept]
        where = {int(p): k for k, p in enumerate(kept)}
        bearing = [where[p] for p in self.layout.get("byClass", ()) if p in where]
        if bearing:
            layout["byClass"] = bearing
        if "sparse" in self.layout:
            sparse = _remap(self.layout["sparse"], where)
            if not bearing:
                sparse.pop("byClass", None)
            if sparse:
                layout["sparse"] = sparse
        sections = {name: {f: col[kept] for f, col in section.items()} for name, section in self.sections.items()}
        classes = {c: {f: col[kept] for f, col in s.items()} for c, s in self.classes.items()} if bearing else {}
        return CompactTable._make(self.head, layout, sections, len(kept), classes)

    def keep_classes(self, classes: frozenset[str]) -> CompactTable:
        """The table of a `classes` filter: only those classes' sections (the nodes carrying `byClass`
        still do, with nothing left when none of theirs is kept)."""
        layout = dict(self.layout)
        sparse = dict(layout.pop("sparse", {}))
        kept_gaps = {c: gaps for c, gaps in sparse.pop("byClass", {}).items() if c in classes}
        if kept_gaps:
            sparse["byClass"] = kept_gaps
        if sparse:
            layout["sparse"] = sparse
        kept = {c: section for c, section in self.classes.items() if c in classes}
        return CompactTable._make(self.head, layout, self.sections, self.size, kept)

    def changed(self, base: CompactTable) -> NDArray[np.bool_]:
        """Per node, whether any of its values differs from `base` (same layout)."""
        out = np.zeros(self.size, dtype=bool)
        for mine, theirs in ((self.sections, base.sections), (self.classes, base.classes)):
            for name, section in mine.items():
                other = theirs[name]
                for field, col in section.items():
                    out |= _differs(col, other[field])
        return out


def compact_update(table: CompactTable, base: tuple[int, CompactTable] | None) -> bytes:
    """The encoded compact `run_update`: a delta on `base` (its seq and table) when the layouts match,
    else a key update with the layout."""
    body = dict(table.head)
    body["format"] = "compact"
    pick: NDArray[np.intp] | None = None
    if base is not None and base[1].layout_key == table.layout_key:
        pick = np.flatnonzero(table.changed(base[1]))
        body["base"] = base[0]
        body["idx"] = pick.tolist()
    else:
        body["layout"] = table.layout
    for name, section in table.sections.items():
        body[name] = {f: _column(col if pick is None else col[pick]) for f, col in section.items()}
    if table.classes:
        body["byClass"] = {
            c: {f: _column(col if pick is None else col[pick]) for f, col in section.items()}
            for c, section in table.classes.items()
        }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
