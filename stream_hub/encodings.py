"""What one client receives for a hub event, shared between clients through one bounded cache.

Most clients get the publisher's bytes (`HubEvent.data`) as they are. Three things are derived:

- the **text** of an event (text frames need a `str`): decoded once and shared by every client;
- a **`nodes` filter's** `run_update`, whose `deltas` hold only the filter's nodes: the event is
  split once into its envelope and its deltas' encodings (`SplitEvent`, ~1.6 ms for 1,000 nodes),
  and each distinct filter then joins the deltas it keeps (~0.13 ms instead of a ~1.2 ms decode
  and re-encode of the whole event per filter);
- a **`classes` filter's** `run_update` (SPEC §14), whose `byClass` hold only the filter's classes:
  decoded, trimmed and encoded once per (event, classes), then split like the event for `nodes`;
  an event without any `byClass` is the event itself for every `classes` filter;
- a coalesced `run_update` that lists `skipped` seqs: per client, never cached;
- a **compact** `run_update` (`stream_hub.compact`): the event's node table in columns is decoded
  once (`CompactTable`, per (nodes, classes) filter), and its encoding depends only on the event,
  the update the client received before it (`base`) and the filters, so every client that keeps up
  shares one.

Every derived value lives in one `ByteLRU` (`encoding_cache_bytes`, default 32 MiB), keyed by the
event's `uid`: a client choosing yet another filter evicts the least recently used encodings
instead of growing memory (issue 12: 20 clients with distinct filters used to add ~0.9 GiB, kept
as long as the events stayed in history). A miss costs CPU, never correctness.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from engine_live.subscribe_options import trim_deltas
from stream_hub.compact import CompactTable, compact_update
from stream_hub.history import HubEvent
from stream_hub.lru import ByteLRU, CacheStats

__all__ = ["DEFAULT_ENCODING_CACHE_BYTES", "EventEncodings", "SplitEvent"]

DEFAULT_ENCODING_CACHE_BYTES = 32 * 1024 * 1024
PART_OVERHEAD = 144  # per delta: its node id (a str), its slot in `ids`, its bound (measured ~140)


@dataclass(frozen=True, slots=True)
class SplitEvent:
    """A `run_update` as its envelope without `deltas` and its deltas' encodings back to back.

    One `bytes` for all deltas, not one per delta: orjson allocates at least 4 KiB for every
    result, so 1,000 separately kept deltas of ~200 bytes would hold ~4 MiB instead of ~200 KiB."""

    head: bytes
    ids: tuple[str | None, ...]  # each delta's nodeId (None: not an object with a string nodeId)
    blob: bytes
    bounds: array[int]  # delta k is blob[bounds[k]:bounds[k + 1]]

    @classmethod
    def of(cls, data: bytes) -> SplitEvent:
        """Decode `data` once and encode each delta on its own."""
        body = orjson.loads(data)
        deltas = body.pop("deltas", None) or []
        parts = [orjson.dumps(d) for d in deltas]
        bounds = array("Q", [0])
        for part in parts:
            bounds.append(bounds[-1] + len(part))
        return cls(orjson.dumps(body), tuple(_node_id(d) for d in deltas), b"".join(parts), bounds)

    def __len__(self) -> int:
        return len(self.head) + len(self.blob) + PART_OVERHEAD * len(self.ids)

    def keep(self, nodes: frozenset[str]) -> bytes:
        """The event with only the deltas of `nodes` (the envelope's other fields unchanged)."""
        view, bounds = memoryview(self.blob), self.bounds
        kept = b",".join([view[bounds[k] : bounds[k + 1]] for k, node in enumerate(self.ids) if node in nodes])
        sep = b"," if len(self.head) > 2 else b""
        return b'%s%s"deltas":[%s]}' % (self.head[:-1], sep, kept)


def _node_id(delta: Any) -> str | None:
    node = delta.get("nodeId") if isinstance(delta, Mapping) else None
    return node if isinstance(node, str) else None


Classes = frozenset[str] | None  # a `classes` filter (None: every class)


def _classes(ev: HubEvent, classes: Classes) -> Classes:
    """The filter that applies to `ev`: None for an event without any `byClass` (nothing to trim)."""
    return classes if classes is not None and ev.type == "run_update" and b'"byClass"' in ev.data else None


def _with_skipped(ev: HubEvent, nodes: frozenset[str] | None, skipped: tuple[int, ...], classes: Classes) -> bytes:
    body = orjson.loads(ev.data)
    if nodes is not None and ev.type == "run_update":
        body["deltas"] = [d for d in body.get("deltas") or [] if _node_id(d) in nodes]
    if classes is not None and isinstance(body.get("deltas"), list):
        body["deltas"] = trim_deltas(body["deltas"], classes)
    body["skipped"] = sorted({*body.get("skipped", ()), *skipped})
    return orjson.dumps(body)


class EventEncodings:
    """The bytes or text a client receives for an event; derived values shared in one `ByteLRU`."""

    def __init__(self, max_bytes: int = DEFAULT_ENCODING_CACHE_BYTES) -> None:
        self._cache: ByteLRU[bytes | str | SplitEvent | CompactTable] = ByteLRU(max_bytes)

    def payload(
        self, ev: HubEvent, nodes: frozenset[str] | None, skipped: tuple[int, ...] = (), classes: Classes = None
    ) -> bytes:
        """The bytes one client receives: `ev.data` itself unless a filter trims deltas or `skipped` is set."""
        classes = _classes(ev, classes)
        if skipped:
            return _with_skipped(ev, nodes, skipped, classes)
        if ev.type != "run_update" or (nodes is None and classes is None):
            return ev.data
        if nodes is None:
            return self._classed(ev, classes)
        key = (ev.uid, nodes, classes)
        cached = self._cache.get(key)
        if isinstance(cached, bytes):
            return cached
        encoded = self._split(ev, classes).keep(nodes)
        self._cache.put(key, encoded)
        return encoded

    def text(
        self, ev: HubEvent, nodes: frozenset[str] | None, skipped: tuple[int, ...] = (), classes: Classes = None
    ) -> str:
        """`payload(...)` decoded; shared by every client with the same filters (none is a filter too)."""
        classes = _classes(ev, classes)
        if skipped:
            return _with_skipped(ev, nodes, skipped, classes).decode()
        trims = ev.type == "run_update" and (nodes is not None or classes is not None)
        key = (ev.uid, nodes, classes, "text") if trims else (ev.uid, None, None, "text")
        cached = self._cache.get(key)
        if isinstance(cached, str):
            return cached
        if not trims:
            text = ev.data.decode()
        elif nodes is None:
            text = self._classed(ev, classes).decode()
        else:
            text = self._split(ev, classes).keep(nodes).decode()
        self._cache.put(key, text)
        return text

    def compact(
        self,
        ev: HubEvent,
        nodes: frozenset[str] | None,
        base: HubEvent | None,
        skipped: tuple[int, ...] = (),
        classes: Classes = None,
    ) -> bytes:
        """A `run_update` in compact form for a client whose previous update was `base` (None: a key
        update with the layout); any other event, or one that has no compact form, as `payload`."""
        classes = _classes(ev, classes)
        table = self._table(ev, nodes, classes) if ev.type == "run_update" else None
        if table is None:
            return self.payload(ev, nodes, skipped, classes)
        key = (ev.uid, nodes, classes, base.uid if base is not None else None, "compact")
        data = self._cache.get(key)
        if not isinstance(data, bytes):
            base_table = self._table(base, nodes, classes) if base is not None else None
            data = compact_update(table, (base.seq, base_table) if base is not None and base_table else None)
            self._cache.put(key, data)
        return data[:-1] + b',"skipped":%s}' % orjson.dumps(sorted(set(skipped))) if skipped else data

    def compact_text(
        self,
        ev: HubEvent,
        nodes: frozenset[str] | None,
        base: HubEvent | None,
        skipped: tuple[int, ...] = (),
        classes: Classes = None,
    ) -> str:
        """`compact(...)` decoded, shared like the bytes."""
        classes = _classes(ev, classes)
        if ev.type != "run_update" or self._table(ev, nodes, classes) is None:
            return self.text(ev, nodes, skipped, classes)
        if skipped:
            return self.compact(ev, nodes, base, skipped, classes).decode()
        key = (ev.uid, nodes, classes, base.uid if base is not None else None, "compact-text")
        text = self._cache.get(key)
        if not isinstance(text, str):
            text = self.compact(ev, nodes, base, classes=classes).decode()
            self._cache.put(key, text)
        return text

    def prime(self, ev: HubEvent, event: Mapping[str, Any]) -> None:
        """Build a `run_update`'s compact table from the publisher's dict (no decode of its bytes)."""
        if ev.type == "run_update":
            table = CompactTable.of_event(dict(event))
            self._cache.put((ev.uid, None, None, "table"), table if table is not None else b"")

    def _table(self, ev: HubEvent, nodes: frozenset[str] | None, classes: Classes = None) -> CompactTable | None:
        """The compact table of a (nodes, classes) filter: the event's own, its nodes kept, then its classes."""
        key = (ev.uid, nodes, classes, "table")
        cached = self._cache.get(key)
        if isinstance(cached, CompactTable):
            return cached
        if cached == b"":  # the event has no compact form (remembered)
            return None
        if classes is not None:
            whole = self._table(ev, nodes)
            table = whole.keep_classes(classes) if whole is not None else None
        elif nodes is not None:
            whole = self._table(ev, None)
            table = whole.keep(nodes) if whole is not None else None
        else:
            table = CompactTable.of(ev.data)
        self._cache.put(key, table if table is not None else b"")
        return table

    def _classed(self, ev: HubEvent, classes: Classes) -> bytes:
        """The event with every `byClass` trimmed to `classes` (decoded and encoded once per filter)."""
        if classes is None:
            return ev.data
        key = (ev.uid, None, classes)
        cached = self._cache.get(key)
        if isinstance(cached, bytes):
            return cached
        body = orjson.loads(ev.data)
        if isinstance(body.get("deltas"), list):
            body["deltas"] = trim_deltas(body["deltas"], classes)
        encoded = orjson.dumps(body)
        self._cache.put(key, encoded)
        return encoded

    def _split(self, ev: HubEvent, classes: Classes = None) -> SplitEvent:
        key = (ev.uid, "split", classes)
        cached = self._cache.get(key)
        if isinstance(cached, SplitEvent):
            return cached
        split = SplitEvent.of(self._classed(ev, classes))
        self._cache.put(key, split)
        return split

    def clear(self) -> None:
        """Forget every derived encoding."""
        self._cache.clear()

    def stats(self) -> CacheStats:
        """What the cache holds (entries, bytes, budget) and its hits, misses and evictions."""
        return self._cache.stats()
