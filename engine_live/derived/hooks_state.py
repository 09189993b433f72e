"""Snapshot state of `DerivedHooks`: captured on the event loop by pointer copies, encoded off it.

What the hooks hold that a restore needs is the warning book, and the book's flags are exactly the
hooks' per-bin mirror (bin → flagged entity indices and their values; `_feed` replaces a bin's
arrays, never mutates them) plus, after a PATCH removed nodes, a few orphan keys the mirror no
longer covers. So a capture (`HooksCapture`, taken between two records) is O(bins + keys) pointer
copies: the mirror dict, the book's published dict (its warning dicts are replaced, never
mutated), the dirty keys and the orphans' cells. The commit thread turns it into `to_state()`:

    {"version": 2, "done", "keys": [[code, nodeId, seriesId], ...],   # entity index → key
     "published": [{"key", "warning"}, ...], "dirty": [key, ...],
     "cells": {"bin": int64[], "entity": int32[], "value": float64[]}}   # sorted by (bin, entity)

`split_cells` / `join_cells` separate the arrays from the JSON part (the snapshot writer stores
them in a binary file next to state.json). `build_book` rebuilds the book and the mirror from the
cells with numpy grouping: no per-cell JSON decoding, worst values by `reduceat`. Severity, the
worst rule and the message function of a key come from its code (`key_spec`), as `_feed` sets
them, so messages are recomputed exactly instead of being stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine_live.warnings.book import Key, MessageFn, WarningBook, sort_key

STATE_VERSION = 2
IntArray = NDArray[np.integer[Any]]  # entity indices (intp when computed, int32 when loaded)
FloatArray = NDArray[np.float64]
Cells = tuple[IntArray, FloatArray]
KeySpec = Callable[[Key], tuple[str, str, MessageFn | None, str | None]]  # severity, worst, message_fn, message


@dataclass(frozen=True)
class HooksCapture:
    """The hooks' state as taken on the loop; `to_state()` (any thread) builds the state dict."""

    done: int
    keys: tuple[Key, ...]  # entity index → key (the hooks' layout)
    mirror: Mapping[int, Cells]  # bin → (entity indices, values); a private shallow copy
    published: Mapping[Key, dict[str, Any]]
    dirty: tuple[Key, ...]
    orphans: tuple[tuple[Key, list[int], list[float]], ...]  # book keys outside the layout

    def to_state(self) -> dict[str, Any]:
        keys = list(self.keys)
        bins = sorted(self.mirror)
        parts = [self.mirror[b] for b in bins]
        counts = [len(p[0]) for p in parts]
        ents = [p[0].astype(np.int32) for p in parts]
        vals = [p[1] for p in parts]
        bin_parts = [np.repeat(np.asarray(bins, dtype=np.int64), counts)] if parts else []
        for key, obins, ovals in self.orphans:
            keys.append(key)
            bin_parts.append(np.asarray(obins, dtype=np.int64))
            ents.append(np.full(len(obins), len(keys) - 1, dtype=np.int32))
            vals.append(np.asarray(ovals, dtype=np.float64))
        b = np.concatenate(bin_parts) if bin_parts else np.zeros(0, dtype=np.int64)
        e = np.concatenate(ents) if ents else np.zeros(0, dtype=np.int32)
        v = np.concatenate(vals) if vals else np.zeros(0)
        cells = {"bin": b, "entity": e, "value": v}
        if self.orphans:  # the mirror's bins are ascending and so are each bin's entities: sorted already
            order = np.lexsort((e, b))
            cells = {"bin": b[order], "entity": e[order], "value": v[order]}
        return {
            "version": STATE_VERSION,
            "done": self.done,
            "keys": [list(k) for k in keys],
            "published": [{"key": list(k), "warning": self.published[k]} for k in sorted(self.published, key=sort_key)],
            "dirty": [list(k) for k in sorted(self.dirty, key=sort_key)],
            "cells": cells,
        }


def split_cells(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """(the JSON-able part, the cell arrays) of a version-2 state."""
    cells = state["cells"]
    return {k: v for k, v in state.items() if k != "cells"}, dict(cells)


def join_cells(part: dict[str, Any], cells: Mapping[str, NDArray[Any]]) -> dict[str, Any]:
    return {
        **part,
        "cells": {
            "bin": np.asarray(cells["bin"], dtype=np.int64),
            "entity": np.asarray(cells["entity"], dtype=np.int32),
            "value": np.asarray(cells["value"], dtype=np.float64),
        },
    }


def jsonable(state: Any) -> Any:
    """A state with its arrays as lists of reprs (JSON-able, == comparable: NaN cells compare equal)."""
    if isinstance(state, HooksCapture):
        state = state.to_state()
    if not isinstance(state, dict) or "cells" not in state:
        return state
    cells = {k: [repr(x) for x in np.asarray(a).tolist()] for k, a in state["cells"].items()}
    return {**state, "cells": cells}


def to_key(raw: Any) -> Key:
    code, node_id, series_id = raw
    return (str(code), node_id, series_id)


def build_book(
    state: Mapping[str, Any], layout_keys: tuple[Key, ...], spec: KeySpec
) -> tuple[WarningBook, dict[int, Cells]]:
    """The warning book and the per-bin mirror (entities of `layout_keys`) of a version-2 state."""
    saved = [to_key(k) for k in state["keys"]]
    at = {k: i for i, k in enumerate(layout_keys)}
    cells = state["cells"]
    b = np.asarray(cells["bin"], dtype=np.int64)
    e = np.asarray(cells["entity"])
    if e.dtype.kind != "i":
        e = e.astype(np.int64)
    v = np.asarray(cells["value"], dtype=np.float64)
    book = WarningBook()
    # as written, cells are sorted by (bin, entity): stable sorts by one key then suffice
    by_bin = bool(np.all((b[1:] > b[:-1]) | ((b[1:] == b[:-1]) & (e[1:] > e[:-1]))))
    if b.size:
        by_key = np.argsort(e, kind="stable") if by_bin else np.lexsort((b, e))
        eb, bb, vb = e[by_key], b[by_key], v[by_key]
        starts = np.flatnonzero(np.concatenate([[True], eb[1:] != eb[:-1]]))
        ends = np.append(starts[1:], eb.size)
        specs = [spec(saved[ent]) for ent in eb[starts].tolist()]
        worst_of = {rule: _worst(vb, starts, rule) for rule in {sp[1] for sp in specs}}
        for g, (s0, s1, ent) in enumerate(zip(starts.tolist(), ends.tolist(), eb[starts].tolist(), strict=True)):
            key = saved[ent]
            severity, worst, fn, message = specs[g]
            book.load_entry(
                key,
                bb[s0:s1],
                vb[s0:s1],
                float(worst_of[worst][g]),
                severity=severity,
                worst=worst,
                message_fn=fn,
                message=message,
            )
    for item in state["published"]:
        book.load_published(to_key(item["key"]), item["warning"])
    for raw in state["dirty"]:
        book.mark_dirty(to_key(raw))
    remap = np.array([at.get(k, -1) for k in saved] or [0], dtype=np.intp)
    mirror: dict[int, Cells] = {}
    if not b.size:
        return book, mirror
    if by_bin and len(saved) and bool(np.all(remap == np.arange(len(saved)))):
        mb, me, mv = b, e, v  # the same layout (the usual case): no remapping, no copies
    else:
        mine = remap[e] >= 0
        mb, me, mv = b[mine], remap[e[mine]], v[mine]
        kept = remap[remap >= 0]
        if not (by_bin and bool(np.all(kept[1:] > kept[:-1]))):  # the layout reorders entities: sort again
            order = np.lexsort((me, mb))
            mb, me, mv = mb[order], me[order], mv[order]
    firsts = np.flatnonzero(np.concatenate([[True], mb[1:] != mb[:-1]]))
    lasts = np.append(firsts[1:], mb.size)
    for s0, s1, bin_index in zip(firsts.tolist(), lasts.tolist(), mb[firsts].tolist(), strict=True):
        mirror[bin_index] = (me[s0:s1], mv[s0:s1])
    return book, mirror


def _worst(v: FloatArray, starts: IntArray, rule: str) -> FloatArray:
    """Per group [starts[g], starts[g+1]): the worst finite value under `rule` (NaN when none)."""
    finite = np.isfinite(v)
    has = np.logical_or.reduceat(finite, starts)
    if rule == "max":
        out = np.maximum.reduceat(np.where(finite, v, -np.inf), starts)
    elif rule == "min":
        out = np.minimum.reduceat(np.where(finite, v, np.inf), starts)
    else:  # largest |v|, the positive one on a tie
        mag = np.where(finite, np.abs(v), -1.0)
        top = np.maximum.reduceat(mag, starts)
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, v.size)))
        out = np.maximum.reduceat(np.where(finite & (mag == top[group]), v, -np.inf), starts)
    return np.where(has, out, np.nan)


__all__ = ["STATE_VERSION", "HooksCapture", "build_book", "join_cells", "jsonable", "split_cells", "to_key"]
